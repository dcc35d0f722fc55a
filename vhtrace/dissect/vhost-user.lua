-- vhost-user.lua: a Wireshark dissector for vhost-user messages exported by vhtrace.
--
--   vhtrace export TRACE -o trace.pcapng
--   vhtrace export --lua > vhost-user.lua
--   tshark -X lua_script:vhost-user.lua -r trace.pcapng -Y 'vhost_user.request == 5'
--
-- (or copy this file into Wireshark's personal Lua plugins folder). It decodes
--   * packets of link type 252 (exported PDU) naming the "vhost-user" dissector,
--     what `vhtrace export` writes by default;
--   * packets of link type 147 (DLT_USER0): `vhtrace export --linktype user`, or
--     scapy's wrpcapng of vhtrace.scapy packets.
--
-- The first comment of each packet, written by vhtrace (vhtrace/dissect/meta.py),
-- says which socket the message crossed (the main socket or the back-end channel,
-- whose request ids overlap), who sent it, and the layout its payload was read by
-- (a reply reads as the request it answers: a postcopy memory table, an ack...).
-- Without that comment a message is taken for the main socket and read by the
-- request table. Filter fields are listed in docs/dissection.md.
--
-- The block between the GENERATED markers comes from vhtrace's protocol model;
-- edit vhtrace/protocol/spec.py and run `python -m vhtrace.dissect.lua` instead.

local vhost_user = Proto("vhost-user", "vhost-user")

-- BEGIN GENERATED: written by `python -m vhtrace.dissect.lua` from vhtrace.protocol; do not edit.
local HEADER_SIZE = 12
local VRING_MASKS = { INDEX = 0xff, NOFD = 0x100 }
local FLAGS = { VERSION_MASK = 0x3, REPLY = 0x4, NEED_REPLY = 0x8 }

-- Requests by channel and id: name, request layout, reply layout(s).
local REQUESTS = {
  main = {
    [1] = { name = "GET_FEATURES", payload = "empty", reply = "virtio_features" },
    [2] = { name = "SET_FEATURES", payload = "virtio_features", reply = "ack" },
    [3] = { name = "SET_OWNER", payload = "empty", reply = "ack" },
    [4] = { name = "RESET_OWNER", payload = "empty", reply = "ack" },
    [5] = { name = "SET_MEM_TABLE", payload = "mem_table", reply = "ack", postcopy = "mem_table" },
    [6] = { name = "SET_LOG_BASE", payload = "log", reply = "log_reply" },
    [7] = { name = "SET_LOG_FD", payload = "empty", reply = "ack" },
    [8] = { name = "SET_VRING_NUM", payload = "vring_state", reply = "ack" },
    [9] = { name = "SET_VRING_ADDR", payload = "vring_addr", reply = "ack" },
    [10] = { name = "SET_VRING_BASE", payload = "vring_base", reply = "ack" },
    [11] = { name = "GET_VRING_BASE", payload = "vring_index", reply = "vring_base" },
    [12] = { name = "SET_VRING_KICK", payload = "vring_fd", reply = "ack" },
    [13] = { name = "SET_VRING_CALL", payload = "vring_fd", reply = "ack" },
    [14] = { name = "SET_VRING_ERR", payload = "vring_fd", reply = "ack" },
    [15] = { name = "GET_PROTOCOL_FEATURES", payload = "empty", reply = "protocol_features" },
    [16] = { name = "SET_PROTOCOL_FEATURES", payload = "protocol_features", reply = "ack" },
    [17] = { name = "GET_QUEUE_NUM", payload = "empty", reply = "u64" },
    [18] = { name = "SET_VRING_ENABLE", payload = "vring_enable", reply = "ack" },
    [19] = { name = "SEND_RARP", payload = "rarp_mac", reply = "ack" },
    [20] = { name = "NET_SET_MTU", payload = "u64", reply = "ack" },
    [21] = { name = "SET_BACKEND_REQ_FD", payload = "empty", reply = "ack" },
    [22] = { name = "IOTLB_MSG", payload = "iotlb", reply = "ack" },
    [23] = { name = "SET_VRING_ENDIAN", payload = "vring_endian", reply = "ack" },
    [24] = { name = "GET_CONFIG", payload = "config", reply = "config" },
    [25] = { name = "SET_CONFIG", payload = "config", reply = "ack" },
    [26] = { name = "CREATE_CRYPTO_SESSION", payload = "crypto_session", reply = "crypto_session" },
    [27] = { name = "CLOSE_CRYPTO_SESSION", payload = "u64", reply = "ack" },
    [28] = { name = "POSTCOPY_ADVISE", payload = "empty", reply = "empty" },
    [29] = { name = "POSTCOPY_LISTEN", payload = "empty", reply = "ack" },
    [30] = { name = "POSTCOPY_END", payload = "empty", reply = "ack" },
    [31] = { name = "GET_INFLIGHT_FD", payload = "inflight", reply = "inflight" },
    [32] = { name = "SET_INFLIGHT_FD", payload = "inflight", reply = "ack" },
    [33] = { name = "GPU_SET_SOCKET", payload = "empty", reply = "ack" },
    [34] = { name = "RESET_DEVICE", payload = "empty", reply = "ack" },
    [35] = { name = "VRING_KICK", payload = "vring_index", reply = "ack" },
    [36] = { name = "GET_MAX_MEM_SLOTS", payload = "empty", reply = "u64" },
    [37] = { name = "ADD_MEM_REG", payload = "mem_region", reply = "ack", postcopy = "mem_region" },
    [38] = { name = "REM_MEM_REG", payload = "mem_region", reply = "ack" },
    [39] = { name = "SET_STATUS", payload = "status", reply = "ack" },
    [40] = { name = "GET_STATUS", payload = "empty", reply = "status" },
    [41] = { name = "GET_SHARED_OBJECT", payload = "shared_uuid", reply = "u64" },
    [42] = { name = "SET_DEVICE_STATE_FD", payload = "device_state", reply = "device_state_result" },
    [43] = { name = "CHECK_DEVICE_STATE", payload = "empty", reply = "u64" },
    [44] = { name = "GET_SHMEM_CONFIG", payload = "empty", reply = "shmem_config" },
    [45] = { name = "GET_VRING_BASE_SKIP_DRAIN", payload = "vring_index", reply = "vring_base" },
  },
  backend = {
    [1] = { name = "IOTLB_MSG", payload = "iotlb", reply = "ack" },
    [2] = { name = "CONFIG_CHANGE_MSG", payload = "empty", reply = "ack" },
    [3] = { name = "VRING_HOST_NOTIFIER_MSG", payload = "vring_area", reply = "ack" },
    [4] = { name = "VRING_CALL", payload = "vring_index", reply = "ack" },
    [5] = { name = "VRING_ERR", payload = "vring_index", reply = "ack" },
    [6] = { name = "SHARED_OBJECT_ADD", payload = "shared_uuid", reply = "ack" },
    [7] = { name = "SHARED_OBJECT_REMOVE", payload = "shared_uuid", reply = "ack" },
    [8] = { name = "SHARED_OBJECT_LOOKUP", payload = "shared_uuid", reply = "u64" },
    [9] = { name = "SHMEM_MAP", payload = "shmem_map", reply = "ack" },
    [10] = { name = "SHMEM_UNMAP", payload = "shmem_map", reply = "ack" },
  },
}

-- Fixed payload sizes by layout (absent: the size depends on the content).
local LAYOUT_SIZES = { empty = 0, u64 = 8, ack = 8, virtio_features = 8, protocol_features = 8, status = 8, vring_fd = 8, rarp_mac = 8, device_state_result = 8, vring_state = 8, vring_index = 8, vring_enable = 8, vring_endian = 8, vring_base = 8, vring_addr = 40, log = 16, iotlb = 32, vring_area = 24, inflight = 24, shared_uuid = 16, device_state = 8, shmem_map = 40, shmem_config = 2056 }

local VALUES = {
  VIRTIO_FEATURES = { [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_BLK = { [0] = "BARRIER", [1] = "SIZE_MAX", [2] = "SEG_MAX", [4] = "GEOMETRY", [5] = "RO", [6] = "BLK_SIZE", [7] = "SCSI", [9] = "FLUSH", [10] = "TOPOLOGY", [11] = "CONFIG_WCE", [12] = "MQ", [13] = "DISCARD", [14] = "WRITE_ZEROES", [15] = "LIFETIME", [16] = "SECURE_ERASE", [17] = "ZONED", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_NET = { [0] = "CSUM", [1] = "GUEST_CSUM", [2] = "CTRL_GUEST_OFFLOADS", [3] = "MTU", [5] = "MAC", [6] = "GSO", [7] = "GUEST_TSO4", [8] = "GUEST_TSO6", [9] = "GUEST_ECN", [10] = "GUEST_UFO", [11] = "HOST_TSO4", [12] = "HOST_TSO6", [13] = "HOST_ECN", [14] = "HOST_UFO", [15] = "MRG_RXBUF", [16] = "STATUS", [17] = "CTRL_VQ", [18] = "CTRL_RX", [19] = "CTRL_VLAN", [20] = "CTRL_RX_EXTRA", [21] = "GUEST_ANNOUNCE", [22] = "MQ", [23] = "CTRL_MAC_ADDR", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ", [52] = "VQ_NOTF_COAL", [53] = "NOTF_COAL", [54] = "GUEST_USO4", [55] = "GUEST_USO6", [56] = "HOST_USO", [57] = "HASH_REPORT", [59] = "GUEST_HDRLEN", [60] = "RSS", [61] = "RSC_EXT", [62] = "STANDBY", [63] = "SPEED_DUPLEX" },
  VIRTIO_FEATURES_FS = { [0] = "NOTIFICATION", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_SCSI = { [0] = "INOUT", [1] = "HOTPLUG", [2] = "CHANGE", [3] = "T10_PI", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_GPU = { [0] = "VIRGL", [1] = "EDID", [2] = "RESOURCE_UUID", [3] = "RESOURCE_BLOB", [4] = "CONTEXT_INIT", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_VSOCK = { [0] = "STREAM", [1] = "SEQPACKET", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_I2C = { [0] = "ZERO_LENGTH_REQUEST", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_GPIO = { [0] = "IRQ", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_RNG = { [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_SOUND = { [0] = "CTLS", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_INPUT = { [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_CAN = { [0] = "CAN_CLASSIC", [1] = "CAN_FD", [2] = "LATE_TX_ACK", [3] = "RTR_FRAMES", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_SCMI = { [0] = "P2A_CHANNELS", [1] = "SHARED_MEMORY", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  VIRTIO_FEATURES_CRYPTO = { [0] = "REVISION_1", [1] = "CIPHER_STATELESS_MODE", [2] = "HASH_STATELESS_MODE", [3] = "MAC_STATELESS_MODE", [4] = "AEAD_STATELESS_MODE", [5] = "AKCIPHER_STATELESS_MODE", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET", [41] = "ADMIN_VQ" },
  PROTOCOL_FEATURES = { [0] = "MQ", [1] = "LOG_SHMFD", [2] = "RARP", [3] = "REPLY_ACK", [4] = "NET_MTU", [5] = "BACKEND_REQ", [6] = "CROSS_ENDIAN", [7] = "CRYPTO_SESSION", [8] = "PAGEFAULT", [9] = "CONFIG", [10] = "BACKEND_SEND_FD", [11] = "HOST_NOTIFIER", [12] = "INFLIGHT_SHMFD", [13] = "RESET_DEVICE", [14] = "INBAND_NOTIFICATIONS", [15] = "CONFIGURE_MEM_SLOTS", [16] = "STATUS", [17] = "XEN_MMAP", [18] = "SHARED_OBJECT", [19] = "DEVICE_STATE", [20] = "GET_VRING_BASE_INFLIGHT", [21] = "GPA_ADDRESSES", [22] = "SHMEM", [23] = "GET_VRING_BASE_SKIP_DRAIN" },
  STATUS_BITS = { [0] = "ACKNOWLEDGE", [1] = "DRIVER", [2] = "DRIVER_OK", [3] = "FEATURES_OK", [6] = "NEEDS_RESET", [7] = "FAILED" },
  IOTLB_TYPES = { [1] = "MISS", [2] = "UPDATE", [3] = "INVALIDATE", [4] = "ACCESS_FAIL", [5] = "BATCH_BEGIN", [6] = "BATCH_END" },
  IOTLB_PERMS = { [0] = "none", [1] = "ro", [2] = "wo", [3] = "rw" },
  CONFIG_FLAGS = { [0] = "writable", [1] = "migration" },
  DEVICE_STATE_DIRECTIONS = { [0] = "save", [1] = "load" },
  DEVICE_STATE_PHASES = { [0] = "stopped" },
  CRYPTO_OP_CODES = { [0] = "sym", [1] = "asym" },
}
local DEVICE_FEATURES = {
  blk = { [0] = "BARRIER", [1] = "SIZE_MAX", [2] = "SEG_MAX", [4] = "GEOMETRY", [5] = "RO", [6] = "BLK_SIZE", [7] = "SCSI", [9] = "FLUSH", [10] = "TOPOLOGY", [11] = "CONFIG_WCE", [12] = "MQ", [13] = "DISCARD", [14] = "WRITE_ZEROES", [15] = "LIFETIME", [16] = "SECURE_ERASE", [17] = "ZONED" },
  net = { [0] = "CSUM", [1] = "GUEST_CSUM", [2] = "CTRL_GUEST_OFFLOADS", [3] = "MTU", [5] = "MAC", [6] = "GSO", [7] = "GUEST_TSO4", [8] = "GUEST_TSO6", [9] = "GUEST_ECN", [10] = "GUEST_UFO", [11] = "HOST_TSO4", [12] = "HOST_TSO6", [13] = "HOST_ECN", [14] = "HOST_UFO", [15] = "MRG_RXBUF", [16] = "STATUS", [17] = "CTRL_VQ", [18] = "CTRL_RX", [19] = "CTRL_VLAN", [20] = "CTRL_RX_EXTRA", [21] = "GUEST_ANNOUNCE", [22] = "MQ", [23] = "CTRL_MAC_ADDR", [52] = "VQ_NOTF_COAL", [53] = "NOTF_COAL", [54] = "GUEST_USO4", [55] = "GUEST_USO6", [56] = "HOST_USO", [57] = "HASH_REPORT", [59] = "GUEST_HDRLEN", [60] = "RSS", [61] = "RSC_EXT", [62] = "STANDBY", [63] = "SPEED_DUPLEX" },
  fs = { [0] = "NOTIFICATION" },
  scsi = { [0] = "INOUT", [1] = "HOTPLUG", [2] = "CHANGE", [3] = "T10_PI" },
  gpu = { [0] = "VIRGL", [1] = "EDID", [2] = "RESOURCE_UUID", [3] = "RESOURCE_BLOB", [4] = "CONTEXT_INIT" },
  vsock = { [0] = "STREAM", [1] = "SEQPACKET" },
  i2c = { [0] = "ZERO_LENGTH_REQUEST" },
  gpio = { [0] = "IRQ" },
  rng = {  },
  sound = { [0] = "CTLS" },
  input = {  },
  can = { [0] = "CAN_CLASSIC", [1] = "CAN_FD", [2] = "LATE_TX_ACK", [3] = "RTR_FRAMES" },
  scmi = { [0] = "P2A_CHANNELS", [1] = "SHARED_MEMORY" },
  crypto = { [0] = "REVISION_1", [1] = "CIPHER_STATELESS_MODE", [2] = "HASH_STATELESS_MODE", [3] = "MAC_STATELESS_MODE", [4] = "AEAD_STATELESS_MODE", [5] = "AKCIPHER_STATELESS_MODE" },
}

-- Config space by device: { name, offset, size, on the summary line }.
local DEVICE_CONFIG = {
  blk = { { "capacity", 0, 8, true }, { "size_max", 8, 4, false }, { "seg_max", 12, 4, true }, { "cylinders", 16, 2, false }, { "heads", 18, 1, false }, { "sectors", 19, 1, false }, { "blk_size", 20, 4, true }, { "physical_block_exp", 24, 1, false }, { "alignment_offset", 25, 1, false }, { "min_io_size", 26, 2, false }, { "opt_io_size", 28, 4, false }, { "writeback", 32, 1, true }, { "num_queues", 34, 2, true }, { "max_discard_sectors", 36, 4, false }, { "max_discard_seg", 40, 4, false }, { "discard_sector_alignment", 44, 4, false }, { "max_write_zeroes_sectors", 48, 4, false }, { "max_write_zeroes_seg", 52, 4, false }, { "write_zeroes_may_unmap", 56, 1, false }, { "max_secure_erase_sectors", 60, 4, false }, { "max_secure_erase_seg", 64, 4, false }, { "secure_erase_sector_alignment", 68, 4, false }, { "zone_sectors", 72, 4, false }, { "max_open_zones", 76, 4, false }, { "max_active_zones", 80, 4, false }, { "max_append_sectors", 84, 4, false }, { "write_granularity", 88, 4, false }, { "model", 92, 1, false } },
  net = { { "mac", 0, 6, true }, { "status", 6, 2, true }, { "max_virtqueue_pairs", 8, 2, true }, { "mtu", 10, 2, true }, { "speed", 12, 4, false }, { "duplex", 16, 1, false }, { "rss_max_key_size", 17, 1, false }, { "rss_max_indirection_table_length", 18, 2, false }, { "supported_hash_types", 20, 4, false } },
  fs = { { "tag", 0, 36, true }, { "num_request_queues", 36, 4, true }, { "notify_buf_size", 40, 4, false } },
  scsi = { { "num_queues", 0, 4, true }, { "seg_max", 4, 4, false }, { "max_sectors", 8, 4, false }, { "cmd_per_lun", 12, 4, false }, { "event_info_size", 16, 4, false }, { "sense_size", 20, 4, false }, { "cdb_size", 24, 4, false }, { "max_channel", 28, 2, false }, { "max_target", 30, 2, true }, { "max_lun", 32, 4, true } },
  gpu = { { "events_read", 0, 4, true }, { "events_clear", 4, 4, false }, { "num_scanouts", 8, 4, true }, { "num_capsets", 12, 4, true } },
  vsock = { { "guest_cid", 0, 8, true } },
  gpio = { { "ngpio", 0, 2, true }, { "gpio_names_size", 4, 4, true } },
  sound = { { "jacks", 0, 4, true }, { "streams", 4, 4, true }, { "chmaps", 8, 4, true }, { "controls", 12, 4, false } },
  input = { { "select", 0, 1, true }, { "subsel", 1, 1, true }, { "size", 2, 1, true }, { "u", 8, 128, false } },
  can = { { "status", 0, 2, true } },
  crypto = { { "status", 0, 4, true }, { "max_dataqueues", 4, 4, true }, { "crypto_services", 8, 4, true }, { "cipher_algo_l", 12, 4, false }, { "cipher_algo_h", 16, 4, false }, { "hash_algo", 20, 4, false }, { "mac_algo_l", 24, 4, false }, { "mac_algo_h", 28, 4, false }, { "aead_algo", 32, 4, false }, { "max_cipher_key_len", 36, 4, false }, { "max_auth_key_len", 40, 4, false }, { "akcipher_algo", 44, 4, false }, { "max_size", 48, 8, false } },
}

-- Struct layouts: { field key, size in bytes } in wire order.
local STRUCTS = {
  u64 = { { "u64", 8 } },
  ack = { { "ack", 8 } },
  virtio_features = { { "features", 8 } },
  protocol_features = { { "protocol_features", 8 } },
  status = { { "status", 8 } },
  vring_state = { { "vring.index", 4 }, { "vring.num", 4 } },
  vring_index = { { "vring.index", 4 }, { "vring.num", 4 } },
  vring_enable = { { "vring.index", 4 }, { "vring.num", 4 } },
  vring_endian = { { "vring.index", 4 }, { "vring.num", 4 } },
  vring_base = { { "vring.index", 4 }, { "vring.num", 4 } },
  vring_addr = { { "vring.index", 4 }, { "vring.flags", 4 }, { "vring.desc", 8 }, { "vring.used", 8 }, { "vring.avail", 8 }, { "vring.log", 8 } },
  log = { { "log.mmap_size", 8 }, { "log.mmap_offset", 8 } },
  iotlb = { { "iotlb.iova", 8 }, { "iotlb.size", 8 }, { "iotlb.uaddr", 8 }, { "iotlb.perm", 1 }, { "iotlb.type", 1 }, { "padding", 6 } },
  inflight = { { "inflight.mmap_size", 8 }, { "inflight.mmap_offset", 8 }, { "inflight.num_queues", 2 }, { "inflight.queue_size", 2 }, { "padding", 4 } },
  device_state = { { "device_state.direction", 4 }, { "device_state.phase", 4 } },
  shmem_map = { { "shmem.shmid", 1 }, { "padding", 7 }, { "shmem.fd_offset", 8 }, { "shmem.shm_offset", 8 }, { "shmem.len", 8 }, { "shmem.flags", 8 } },
  region = { { "mem.gpa", 8 }, { "mem.size", 8 }, { "mem.uaddr", 8 }, { "mem.mmap_offset", 8 } },
  region_xen = { { "mem.gpa", 8 }, { "mem.size", 8 }, { "mem.uaddr", 8 }, { "mem.mmap_offset", 8 }, { "mem.xen_mmap_flags", 4 }, { "mem.domid", 4 } },
  crypto_sym = { { "crypto.op_code", 8 }, { "crypto.cipher_alg", 4 }, { "crypto.key_len", 4 }, { "crypto.hash_alg", 4 }, { "crypto.hash_result_len", 4 }, { "crypto.auth_key_len", 4 }, { "crypto.add_len", 4 }, { "crypto.op_type", 1 }, { "crypto.direction", 1 }, { "crypto.hash_mode", 1 }, { "crypto.alg_chain_order", 1 }, { "padding", 4 }, { "crypto.key_ptr", 8 }, { "crypto.auth_key_ptr", 8 }, { "crypto.key", 64 }, { "crypto.auth_key", 512 }, { "crypto.union_tail", 432 }, { "crypto.session_id", 8 } },
  crypto_asym = { { "crypto.op_code", 8 }, { "crypto.algo", 4 }, { "crypto.keytype", 4 }, { "crypto.keylen", 4 }, { "padding", 4 }, { "crypto.key_ptr", 8 }, { "crypto.param0", 4 }, { "crypto.param1", 4 }, { "crypto.key", 1024 }, { "crypto.session_id", 8 } },
  crypto_old = { { "crypto.session_id", 8 }, { "crypto.op_code32", 4 }, { "crypto.cipher_alg", 4 }, { "crypto.key_len", 4 }, { "crypto.hash_alg", 4 }, { "crypto.hash_result_len", 4 }, { "crypto.auth_key_len", 4 }, { "crypto.add_len", 4 }, { "crypto.op_type", 1 }, { "crypto.direction", 1 }, { "crypto.hash_mode", 1 }, { "crypto.alg_chain_order", 1 }, { "crypto.key_ptr", 8 }, { "crypto.auth_key_ptr", 8 }, { "crypto.key", 64 }, { "crypto.auth_key", 512 } },
}

local F = {}
F["request"] = ProtoField.uint32("vhost_user.request", "Request", base.DEC, nil)
F["request_name"] = ProtoField.string("vhost_user.request_name", "Request name")
F["flags"] = ProtoField.uint32("vhost_user.flags", "Flags", base.HEX, nil)
F["flags.version"] = ProtoField.uint32("vhost_user.flags.version", "Version", base.DEC, nil, 0x3)
F["flags.reply"] = ProtoField.bool("vhost_user.flags.reply", "Reply", 32, nil, 0x4)
F["flags.need_reply"] = ProtoField.bool("vhost_user.flags.need_reply", "Need reply", 32, nil, 0x8)
F["flags.reserved"] = ProtoField.uint32("vhost_user.flags.reserved", "Reserved flags", base.HEX, nil, 0xfffffff0)
F["size"] = ProtoField.uint32("vhost_user.size", "Size", base.DEC, nil)
F["session"] = ProtoField.uint32("vhost_user.session", "Session", base.DEC, nil)
F["seq"] = ProtoField.uint64("vhost_user.seq", "Message number", base.DEC, nil)
F["channel"] = ProtoField.string("vhost_user.channel", "Channel")
F["sender"] = ProtoField.string("vhost_user.sender", "Sender")
F["role"] = ProtoField.string("vhost_user.role", "Role")
F["layout"] = ProtoField.string("vhost_user.layout", "Payload layout")
F["answers"] = ProtoField.uint64("vhost_user.answers", "Answers message", base.DEC, nil)
F["request_in"] = ProtoField.framenum("vhost_user.request_in", "Request in", base.NONE, frametype.REQUEST)
F["reply_in"] = ProtoField.framenum("vhost_user.reply_in", "Reply in", base.NONE, frametype.RESPONSE)
F["fd"] = ProtoField.string("vhost_user.fd", "File descriptor")
F["finding"] = ProtoField.string("vhost_user.finding", "Finding")
F["payload"] = ProtoField.bytes("vhost_user.payload", "Payload")
F["trailing"] = ProtoField.bytes("vhost_user.trailing", "Bytes beyond the layout")
F["after_size"] = ProtoField.bytes("vhost_user.after_size", "Bytes after the message size")
F["padding"] = ProtoField.bytes("vhost_user.padding", "Padding")
F["u64"] = ProtoField.uint64("vhost_user.u64", "Value", base.DEC, nil)
F["ack"] = ProtoField.uint64("vhost_user.ack", "Ack (0 = success)", base.DEC, nil)
F["features"] = ProtoField.uint64("vhost_user.features", "Virtio features", base.HEX, nil)
F["features.bit"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES)
F["features.name"] = ProtoField.string("vhost_user.features.name", "Feature name")
F["protocol_features"] = ProtoField.uint64("vhost_user.protocol_features", "Protocol features", base.HEX, nil)
F["protocol_features.bit"] = ProtoField.uint8("vhost_user.protocol_features.bit", "Protocol feature bit", base.DEC, VALUES.PROTOCOL_FEATURES)
F["status"] = ProtoField.uint64("vhost_user.status", "Device status", base.HEX, nil)
F["status.bit"] = ProtoField.uint8("vhost_user.status.bit", "Status bit", base.DEC, VALUES.STATUS_BITS)
F["mac"] = ProtoField.ether("vhost_user.mac", "MAC address")
F["uuid"] = ProtoField.guid("vhost_user.uuid", "Shared object UUID")
F["vring.index"] = ProtoField.uint32("vhost_user.vring.index", "Ring index", base.DEC, nil)
F["vring.num"] = ProtoField.uint32("vhost_user.vring.num", "Num", base.DEC, nil)
F["vring.nofd"] = ProtoField.bool("vhost_user.vring.nofd", "No fd", 8, nil, 0x1)
F["vring.reserved"] = ProtoField.uint64("vhost_user.vring.reserved", "Reserved bits", base.HEX, nil)
F["vring.next_avail"] = ProtoField.uint16("vhost_user.vring.next_avail", "Next avail index", base.DEC, nil)
F["vring.last_avail_idx"] = ProtoField.uint16("vhost_user.vring.last_avail_idx", "Last avail index", base.DEC, nil, 0x7fff)
F["vring.avail_wrap"] = ProtoField.bool("vhost_user.vring.avail_wrap", "Avail wrap counter", 16, nil, 0x8000)
F["vring.used_idx"] = ProtoField.uint16("vhost_user.vring.used_idx", "Used index", base.DEC, nil, 0x7fff)
F["vring.used_wrap"] = ProtoField.bool("vhost_user.vring.used_wrap", "Used wrap counter", 16, nil, 0x8000)
F["vring.flags"] = ProtoField.uint32("vhost_user.vring.flags", "Address flags", base.HEX, nil)
F["vring.flags.log"] = ProtoField.bool("vhost_user.vring.flags.log", "Log used-ring writes", 32, nil, 0x1)
F["vring.desc"] = ProtoField.uint64("vhost_user.vring.desc", "Descriptor table", base.HEX, nil)
F["vring.used"] = ProtoField.uint64("vhost_user.vring.used", "Used ring", base.HEX, nil)
F["vring.avail"] = ProtoField.uint64("vhost_user.vring.avail", "Available ring", base.HEX, nil)
F["vring.log"] = ProtoField.uint64("vhost_user.vring.log", "Log address", base.HEX, nil)
F["area.size"] = ProtoField.uint64("vhost_user.area.size", "Area size", base.HEX, nil)
F["area.offset"] = ProtoField.uint64("vhost_user.area.offset", "Area offset", base.HEX, nil)
F["mem.nregions"] = ProtoField.uint32("vhost_user.mem.nregions", "Regions", base.DEC, nil)
F["mem.gpa"] = ProtoField.uint64("vhost_user.mem.gpa", "Guest physical address", base.HEX, nil)
F["mem.size"] = ProtoField.uint64("vhost_user.mem.size", "Size", base.HEX, nil)
F["mem.uaddr"] = ProtoField.uint64("vhost_user.mem.uaddr", "User address", base.HEX, nil)
F["mem.mmap_offset"] = ProtoField.uint64("vhost_user.mem.mmap_offset", "Mmap offset", base.HEX, nil)
F["mem.xen_mmap_flags"] = ProtoField.uint32("vhost_user.mem.xen_mmap_flags", "Xen mmap flags", base.HEX, nil)
F["mem.domid"] = ProtoField.uint32("vhost_user.mem.domid", "Xen domain", base.DEC, nil)
F["log.mmap_size"] = ProtoField.uint64("vhost_user.log.mmap_size", "Log size", base.HEX, nil)
F["log.mmap_offset"] = ProtoField.uint64("vhost_user.log.mmap_offset", "Log offset", base.HEX, nil)
F["iotlb.iova"] = ProtoField.uint64("vhost_user.iotlb.iova", "IOVA", base.HEX, nil)
F["iotlb.size"] = ProtoField.uint64("vhost_user.iotlb.size", "Size", base.HEX, nil)
F["iotlb.uaddr"] = ProtoField.uint64("vhost_user.iotlb.uaddr", "User address", base.HEX, nil)
F["iotlb.perm"] = ProtoField.uint8("vhost_user.iotlb.perm", "Permission", base.DEC, VALUES.IOTLB_PERMS)
F["iotlb.type"] = ProtoField.uint8("vhost_user.iotlb.type", "Type", base.DEC, VALUES.IOTLB_TYPES)
F["config.offset"] = ProtoField.uint32("vhost_user.config.offset", "Offset", base.DEC, nil)
F["config.size"] = ProtoField.uint32("vhost_user.config.size", "Size", base.DEC, nil)
F["config.flags"] = ProtoField.uint32("vhost_user.config.flags", "Flags", base.DEC, VALUES.CONFIG_FLAGS)
F["config.region"] = ProtoField.bytes("vhost_user.config.region", "Config space")
F["inflight.mmap_size"] = ProtoField.uint64("vhost_user.inflight.mmap_size", "Area size", base.HEX, nil)
F["inflight.mmap_offset"] = ProtoField.uint64("vhost_user.inflight.mmap_offset", "Area offset", base.HEX, nil)
F["inflight.num_queues"] = ProtoField.uint16("vhost_user.inflight.num_queues", "Queues", base.DEC, nil)
F["inflight.queue_size"] = ProtoField.uint16("vhost_user.inflight.queue_size", "Queue size", base.DEC, nil)
F["device_state.direction"] = ProtoField.uint32("vhost_user.device_state.direction", "Direction", base.DEC, VALUES.DEVICE_STATE_DIRECTIONS)
F["device_state.phase"] = ProtoField.uint32("vhost_user.device_state.phase", "Phase", base.DEC, VALUES.DEVICE_STATE_PHASES)
F["device_state.error"] = ProtoField.uint8("vhost_user.device_state.error", "Error", base.DEC, nil)
F["device_state.nofd"] = ProtoField.bool("vhost_user.device_state.nofd", "No fd returned", 8, nil, 0x1)
F["shmem.shmid"] = ProtoField.uint8("vhost_user.shmem.shmid", "Shared memory id", base.DEC, nil)
F["shmem.fd_offset"] = ProtoField.uint64("vhost_user.shmem.fd_offset", "Fd offset", base.HEX, nil)
F["shmem.shm_offset"] = ProtoField.uint64("vhost_user.shmem.shm_offset", "Shared memory offset", base.HEX, nil)
F["shmem.len"] = ProtoField.uint64("vhost_user.shmem.len", "Length", base.HEX, nil)
F["shmem.flags"] = ProtoField.uint64("vhost_user.shmem.flags", "Map flags", base.HEX, nil)
F["shmem.nregions"] = ProtoField.uint32("vhost_user.shmem.nregions", "Regions", base.DEC, nil)
F["shmem.memory_size"] = ProtoField.uint64("vhost_user.shmem.memory_size", "Region size", base.HEX, nil)
F["crypto.op_code"] = ProtoField.uint64("vhost_user.crypto.op_code", "Operation", base.DEC, VALUES.CRYPTO_OP_CODES)
F["crypto.op_code32"] = ProtoField.uint32("vhost_user.crypto.op_code32", "Operation", base.DEC, VALUES.CRYPTO_OP_CODES)
F["crypto.session_id"] = ProtoField.int64("vhost_user.crypto.session_id", "Session id", base.DEC, nil)
F["crypto.cipher_alg"] = ProtoField.uint32("vhost_user.crypto.cipher_alg", "Cipher alg", base.DEC, nil)
F["crypto.key_len"] = ProtoField.uint32("vhost_user.crypto.key_len", "Key len", base.DEC, nil)
F["crypto.hash_alg"] = ProtoField.uint32("vhost_user.crypto.hash_alg", "Hash alg", base.DEC, nil)
F["crypto.hash_result_len"] = ProtoField.uint32("vhost_user.crypto.hash_result_len", "Hash result len", base.DEC, nil)
F["crypto.auth_key_len"] = ProtoField.uint32("vhost_user.crypto.auth_key_len", "Auth key len", base.DEC, nil)
F["crypto.add_len"] = ProtoField.uint32("vhost_user.crypto.add_len", "Additional data length", base.DEC, nil)
F["crypto.op_type"] = ProtoField.uint8("vhost_user.crypto.op_type", "Op type", base.DEC, nil)
F["crypto.direction"] = ProtoField.uint8("vhost_user.crypto.direction", "Direction", base.DEC, nil)
F["crypto.hash_mode"] = ProtoField.uint8("vhost_user.crypto.hash_mode", "Hash mode", base.DEC, nil)
F["crypto.alg_chain_order"] = ProtoField.uint8("vhost_user.crypto.alg_chain_order", "Alg chain order", base.DEC, nil)
F["crypto.key_ptr"] = ProtoField.uint64("vhost_user.crypto.key_ptr", "Key pointer (meaningless on the wire)", base.HEX, nil)
F["crypto.auth_key_ptr"] = ProtoField.uint64("vhost_user.crypto.auth_key_ptr", "Auth key pointer (meaningless on the wire)", base.HEX, nil)
F["crypto.key"] = ProtoField.bytes("vhost_user.crypto.key", "Key")
F["crypto.auth_key"] = ProtoField.bytes("vhost_user.crypto.auth_key", "Auth key")
F["crypto.union_tail"] = ProtoField.bytes("vhost_user.crypto.union_tail", "Rest of the session union")
F["crypto.algo"] = ProtoField.uint32("vhost_user.crypto.algo", "Algo", base.DEC, nil)
F["crypto.keytype"] = ProtoField.uint32("vhost_user.crypto.keytype", "Keytype", base.DEC, nil)
F["crypto.keylen"] = ProtoField.uint32("vhost_user.crypto.keylen", "Keylen", base.DEC, nil)
F["crypto.param0"] = ProtoField.uint32("vhost_user.crypto.param0", "Algorithm parameter 0", base.DEC, nil)
F["crypto.param1"] = ProtoField.uint32("vhost_user.crypto.param1", "Algorithm parameter 1", base.DEC, nil)
F["crypto.data"] = ProtoField.bytes("vhost_user.crypto.data", "Session (unknown layout)")
F["config.blk.capacity"] = ProtoField.uint64("vhost_user.config.blk.capacity", "Capacity", base.DEC, nil)
F["config.blk.size_max"] = ProtoField.uint32("vhost_user.config.blk.size_max", "Size max", base.DEC, nil)
F["config.blk.seg_max"] = ProtoField.uint32("vhost_user.config.blk.seg_max", "Seg max", base.DEC, nil)
F["config.blk.cylinders"] = ProtoField.uint16("vhost_user.config.blk.cylinders", "Cylinders", base.DEC, nil)
F["config.blk.heads"] = ProtoField.uint8("vhost_user.config.blk.heads", "Heads", base.DEC, nil)
F["config.blk.sectors"] = ProtoField.uint8("vhost_user.config.blk.sectors", "Sectors", base.DEC, nil)
F["config.blk.blk_size"] = ProtoField.uint32("vhost_user.config.blk.blk_size", "Blk size", base.DEC, nil)
F["config.blk.physical_block_exp"] = ProtoField.uint8("vhost_user.config.blk.physical_block_exp", "Physical block exp", base.DEC, nil)
F["config.blk.alignment_offset"] = ProtoField.uint8("vhost_user.config.blk.alignment_offset", "Alignment offset", base.DEC, nil)
F["config.blk.min_io_size"] = ProtoField.uint16("vhost_user.config.blk.min_io_size", "Min io size", base.DEC, nil)
F["config.blk.opt_io_size"] = ProtoField.uint32("vhost_user.config.blk.opt_io_size", "Opt io size", base.DEC, nil)
F["config.blk.writeback"] = ProtoField.uint8("vhost_user.config.blk.writeback", "Writeback", base.DEC, nil)
F["config.blk.num_queues"] = ProtoField.uint16("vhost_user.config.blk.num_queues", "Num queues", base.DEC, nil)
F["config.blk.max_discard_sectors"] = ProtoField.uint32("vhost_user.config.blk.max_discard_sectors", "Max discard sectors", base.DEC, nil)
F["config.blk.max_discard_seg"] = ProtoField.uint32("vhost_user.config.blk.max_discard_seg", "Max discard seg", base.DEC, nil)
F["config.blk.discard_sector_alignment"] = ProtoField.uint32("vhost_user.config.blk.discard_sector_alignment", "Discard sector alignment", base.DEC, nil)
F["config.blk.max_write_zeroes_sectors"] = ProtoField.uint32("vhost_user.config.blk.max_write_zeroes_sectors", "Max write zeroes sectors", base.DEC, nil)
F["config.blk.max_write_zeroes_seg"] = ProtoField.uint32("vhost_user.config.blk.max_write_zeroes_seg", "Max write zeroes seg", base.DEC, nil)
F["config.blk.write_zeroes_may_unmap"] = ProtoField.uint8("vhost_user.config.blk.write_zeroes_may_unmap", "Write zeroes may unmap", base.DEC, nil)
F["config.blk.max_secure_erase_sectors"] = ProtoField.uint32("vhost_user.config.blk.max_secure_erase_sectors", "Max secure erase sectors", base.DEC, nil)
F["config.blk.max_secure_erase_seg"] = ProtoField.uint32("vhost_user.config.blk.max_secure_erase_seg", "Max secure erase seg", base.DEC, nil)
F["config.blk.secure_erase_sector_alignment"] = ProtoField.uint32("vhost_user.config.blk.secure_erase_sector_alignment", "Secure erase sector alignment", base.DEC, nil)
F["config.blk.zone_sectors"] = ProtoField.uint32("vhost_user.config.blk.zone_sectors", "Zone sectors", base.DEC, nil)
F["config.blk.max_open_zones"] = ProtoField.uint32("vhost_user.config.blk.max_open_zones", "Max open zones", base.DEC, nil)
F["config.blk.max_active_zones"] = ProtoField.uint32("vhost_user.config.blk.max_active_zones", "Max active zones", base.DEC, nil)
F["config.blk.max_append_sectors"] = ProtoField.uint32("vhost_user.config.blk.max_append_sectors", "Max append sectors", base.DEC, nil)
F["config.blk.write_granularity"] = ProtoField.uint32("vhost_user.config.blk.write_granularity", "Write granularity", base.DEC, nil)
F["config.blk.model"] = ProtoField.uint8("vhost_user.config.blk.model", "Model", base.DEC, nil)
F["config.net.mac"] = ProtoField.ether("vhost_user.config.net.mac", "Mac")
F["config.net.status"] = ProtoField.uint16("vhost_user.config.net.status", "Status", base.DEC, nil)
F["config.net.max_virtqueue_pairs"] = ProtoField.uint16("vhost_user.config.net.max_virtqueue_pairs", "Max virtqueue pairs", base.DEC, nil)
F["config.net.mtu"] = ProtoField.uint16("vhost_user.config.net.mtu", "Mtu", base.DEC, nil)
F["config.net.speed"] = ProtoField.uint32("vhost_user.config.net.speed", "Speed", base.DEC, nil)
F["config.net.duplex"] = ProtoField.uint8("vhost_user.config.net.duplex", "Duplex", base.DEC, nil)
F["config.net.rss_max_key_size"] = ProtoField.uint8("vhost_user.config.net.rss_max_key_size", "Rss max key size", base.DEC, nil)
F["config.net.rss_max_indirection_table_length"] = ProtoField.uint16("vhost_user.config.net.rss_max_indirection_table_length", "Rss max indirection table length", base.DEC, nil)
F["config.net.supported_hash_types"] = ProtoField.uint32("vhost_user.config.net.supported_hash_types", "Supported hash types", base.DEC, nil)
F["config.fs.tag"] = ProtoField.string("vhost_user.config.fs.tag", "Tag")
F["config.fs.num_request_queues"] = ProtoField.uint32("vhost_user.config.fs.num_request_queues", "Num request queues", base.DEC, nil)
F["config.fs.notify_buf_size"] = ProtoField.uint32("vhost_user.config.fs.notify_buf_size", "Notify buf size", base.DEC, nil)
F["config.scsi.num_queues"] = ProtoField.uint32("vhost_user.config.scsi.num_queues", "Num queues", base.DEC, nil)
F["config.scsi.seg_max"] = ProtoField.uint32("vhost_user.config.scsi.seg_max", "Seg max", base.DEC, nil)
F["config.scsi.max_sectors"] = ProtoField.uint32("vhost_user.config.scsi.max_sectors", "Max sectors", base.DEC, nil)
F["config.scsi.cmd_per_lun"] = ProtoField.uint32("vhost_user.config.scsi.cmd_per_lun", "Cmd per lun", base.DEC, nil)
F["config.scsi.event_info_size"] = ProtoField.uint32("vhost_user.config.scsi.event_info_size", "Event info size", base.DEC, nil)
F["config.scsi.sense_size"] = ProtoField.uint32("vhost_user.config.scsi.sense_size", "Sense size", base.DEC, nil)
F["config.scsi.cdb_size"] = ProtoField.uint32("vhost_user.config.scsi.cdb_size", "Cdb size", base.DEC, nil)
F["config.scsi.max_channel"] = ProtoField.uint16("vhost_user.config.scsi.max_channel", "Max channel", base.DEC, nil)
F["config.scsi.max_target"] = ProtoField.uint16("vhost_user.config.scsi.max_target", "Max target", base.DEC, nil)
F["config.scsi.max_lun"] = ProtoField.uint32("vhost_user.config.scsi.max_lun", "Max lun", base.DEC, nil)
F["config.gpu.events_read"] = ProtoField.uint32("vhost_user.config.gpu.events_read", "Events read", base.DEC, nil)
F["config.gpu.events_clear"] = ProtoField.uint32("vhost_user.config.gpu.events_clear", "Events clear", base.DEC, nil)
F["config.gpu.num_scanouts"] = ProtoField.uint32("vhost_user.config.gpu.num_scanouts", "Num scanouts", base.DEC, nil)
F["config.gpu.num_capsets"] = ProtoField.uint32("vhost_user.config.gpu.num_capsets", "Num capsets", base.DEC, nil)
F["config.vsock.guest_cid"] = ProtoField.uint64("vhost_user.config.vsock.guest_cid", "Guest cid", base.DEC, nil)
F["config.gpio.ngpio"] = ProtoField.uint16("vhost_user.config.gpio.ngpio", "Ngpio", base.DEC, nil)
F["config.gpio.gpio_names_size"] = ProtoField.uint32("vhost_user.config.gpio.gpio_names_size", "Gpio names size", base.DEC, nil)
F["config.sound.jacks"] = ProtoField.uint32("vhost_user.config.sound.jacks", "Jacks", base.DEC, nil)
F["config.sound.streams"] = ProtoField.uint32("vhost_user.config.sound.streams", "Streams", base.DEC, nil)
F["config.sound.chmaps"] = ProtoField.uint32("vhost_user.config.sound.chmaps", "Chmaps", base.DEC, nil)
F["config.sound.controls"] = ProtoField.uint32("vhost_user.config.sound.controls", "Controls", base.DEC, nil)
F["config.input.select"] = ProtoField.uint8("vhost_user.config.input.select", "Select", base.DEC, nil)
F["config.input.subsel"] = ProtoField.uint8("vhost_user.config.input.subsel", "Subsel", base.DEC, nil)
F["config.input.size"] = ProtoField.uint8("vhost_user.config.input.size", "Size", base.DEC, nil)
F["config.input.u"] = ProtoField.string("vhost_user.config.input.u", "U")
F["config.can.status"] = ProtoField.uint16("vhost_user.config.can.status", "Status", base.DEC, nil)
F["config.crypto.status"] = ProtoField.uint32("vhost_user.config.crypto.status", "Status", base.DEC, nil)
F["config.crypto.max_dataqueues"] = ProtoField.uint32("vhost_user.config.crypto.max_dataqueues", "Max dataqueues", base.DEC, nil)
F["config.crypto.crypto_services"] = ProtoField.uint32("vhost_user.config.crypto.crypto_services", "Crypto services", base.DEC, nil)
F["config.crypto.cipher_algo_l"] = ProtoField.uint32("vhost_user.config.crypto.cipher_algo_l", "Cipher algo l", base.DEC, nil)
F["config.crypto.cipher_algo_h"] = ProtoField.uint32("vhost_user.config.crypto.cipher_algo_h", "Cipher algo h", base.DEC, nil)
F["config.crypto.hash_algo"] = ProtoField.uint32("vhost_user.config.crypto.hash_algo", "Hash algo", base.DEC, nil)
F["config.crypto.mac_algo_l"] = ProtoField.uint32("vhost_user.config.crypto.mac_algo_l", "Mac algo l", base.DEC, nil)
F["config.crypto.mac_algo_h"] = ProtoField.uint32("vhost_user.config.crypto.mac_algo_h", "Mac algo h", base.DEC, nil)
F["config.crypto.aead_algo"] = ProtoField.uint32("vhost_user.config.crypto.aead_algo", "Aead algo", base.DEC, nil)
F["config.crypto.max_cipher_key_len"] = ProtoField.uint32("vhost_user.config.crypto.max_cipher_key_len", "Max cipher key len", base.DEC, nil)
F["config.crypto.max_auth_key_len"] = ProtoField.uint32("vhost_user.config.crypto.max_auth_key_len", "Max auth key len", base.DEC, nil)
F["config.crypto.akcipher_algo"] = ProtoField.uint32("vhost_user.config.crypto.akcipher_algo", "Akcipher algo", base.DEC, nil)
F["config.crypto.max_size"] = ProtoField.uint64("vhost_user.config.crypto.max_size", "Max size", base.DEC, nil)
F["features.bit.blk"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_BLK)
F["features.bit.net"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_NET)
F["features.bit.fs"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_FS)
F["features.bit.scsi"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_SCSI)
F["features.bit.gpu"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_GPU)
F["features.bit.vsock"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_VSOCK)
F["features.bit.i2c"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_I2C)
F["features.bit.gpio"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_GPIO)
F["features.bit.rng"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_RNG)
F["features.bit.sound"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_SOUND)
F["features.bit.input"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_INPUT)
F["features.bit.can"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_CAN)
F["features.bit.scmi"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_SCMI)
F["features.bit.crypto"] = ProtoField.uint8("vhost_user.features.bit", "Feature bit", base.DEC, VALUES.VIRTIO_FEATURES_CRYPTO)
-- END GENERATED

local fields = {}
for _, field in pairs(F) do
  fields[#fields + 1] = field
end
vhost_user.fields = fields

local E = {
  finding_error = ProtoExpert.new("vhost_user.expert.finding_error", "vhtrace finding",
    expert.group.PROTOCOL, expert.severity.ERROR),
  finding_warning = ProtoExpert.new("vhost_user.expert.finding_warning", "vhtrace finding",
    expert.group.PROTOCOL, expert.severity.WARN),
  header_cut = ProtoExpert.new("vhost_user.expert.header_cut", "Message cut inside its header",
    expert.group.MALFORMED, expert.severity.ERROR),
  cut = ProtoExpert.new("vhost_user.expert.cut", "Payload not recorded whole",
    expert.group.MALFORMED, expert.severity.WARN),
  short = ProtoExpert.new("vhost_user.expert.short", "Payload too short for its layout",
    expert.group.MALFORMED, expert.severity.ERROR),
  trailing = ProtoExpert.new("vhost_user.expert.trailing",
    "Payload bytes the layout does not define", expert.group.PROTOCOL, expert.severity.WARN),
  after_size = ProtoExpert.new("vhost_user.expert.after_size", "Bytes after the message size",
    expert.group.MALFORMED, expert.severity.ERROR),
  unknown = ProtoExpert.new("vhost_user.expert.unknown_request", "Request id not in the spec",
    expert.group.UNDECODED, expert.severity.WARN),
  meta = ProtoExpert.new("vhost_user.expert.meta", "vhtrace metadata",
    expert.group.COMMENTS_GROUP, expert.severity.NOTE),
}
vhost_user.experts = { E.finding_error, E.finding_warning, E.header_cut, E.cut, E.short,
  E.trailing, E.after_size, E.unknown, E.meta }

local META_VERSION = 1
local band = (bit32 and bit32.band) or (bit and bit.band)
  or load("return function(a, b) return a & b end")()

-- Request <-> reply links, by message number; rebuilt for every file.
local frame_of_seq, reply_of_seq = {}, {}
function vhost_user.init()
  frame_of_seq, reply_of_seq = {}, {}
end

-- --------------------------------------------------------------------------
-- Small helpers
-- --------------------------------------------------------------------------

local function num64(buf, off)
  return buf(off + 4, 4):le_uint() * 4294967296 + buf(off, 4):le_uint()
end

local function hex64(buf, off)
  local digits = buf(off, 8):le_uint64():tohex():gsub("^0+", "")
  return "0x" .. (digits == "" and "0" or digits)
end

local function human(n)
  local units = { { "TiB", 2 ^ 40 }, { "GiB", 2 ^ 30 }, { "MiB", 2 ^ 20 }, { "KiB", 2 ^ 10 } }
  for _, unit in ipairs(units) do
    if n ~= 0 and n % unit[2] == 0 then
      return string.format("%d %s", n / unit[2], unit[1])
    end
  end
  return n < 4096 and string.format("%d B", n) or string.format("0x%x B", n)
end

local function name_of(table, value, fallback)
  return table[value] or (fallback or "") .. tostring(value)
end

local function set_bits(buf, off, nbytes)
  local bits = {}
  for byte = 0, nbytes - 1 do
    local value = buf(off + byte, 1):uint()
    for i = 0, 7 do
      if band(value, 2 ^ i) ~= 0 then
        bits[#bits + 1] = byte * 8 + i
      end
    end
  end
  return bits
end

-- Adds the fields of a struct from `off`; returns where it stopped and whether all fitted.
local function add_struct(buf, off, tree, entries)
  for _, entry in ipairs(entries) do
    local key, size = entry[1], entry[2]
    if off + size > buf:len() then
      return off, false
    end
    tree:add_le(F[key], buf(off, size))
    off = off + size
  end
  return off, true
end

local function struct_size(entries)
  local size = 0
  for _, entry in ipairs(entries) do
    size = size + entry[2]
  end
  return size
end

-- Lists the set bits of a u64 under its item, named from `names`; with a device, by the
-- field of that device (the same filter name, its value names the device's bits too), and
-- with `name_key`, each bit's name as a hidden string field (filters by name).
local function add_bits(item, buf, key, names, device, name_key)
  local words = {}
  local field = device and F[key .. "." .. device] or F[key]
  local values = device and VALUES["VIRTIO_FEATURES_" .. device:upper()] or names
  for _, bit in ipairs(set_bits(buf, 0, 8)) do
    local range = buf(math.floor(bit / 8), 1)
    item:add(field, range, bit)
    local name = values[bit] or ("bit" .. bit)
    if name_key then
      item:add(F[name_key], range, name):set_hidden()
    end
    words[#words + 1] = name
  end
  return table.concat(words, "|")
end

-- --------------------------------------------------------------------------
-- Payload decoders: layout name -> function(buf, tree, ctx) returning
-- (bytes decoded, whether the layout was complete, summary text)
-- --------------------------------------------------------------------------

local D = {}

local function ack_text(buf)
  local value = buf(0, 8):le_uint64()
  return value == UInt64.new(0) and "ok" or ("failed (" .. tostring(value) .. ")")
end

local function plain(layout, summary)
  return function(buf, tree, ctx)
    local off, ok = add_struct(buf, 0, tree, STRUCTS[layout])
    return off, ok, ok and summary(buf, ctx) or nil
  end
end

D.empty = function() return 0, true, nil end

D.u64 = plain("u64", function(buf)
  local value = num64(buf, 0)
  return value < 2 ^ 32 and tostring(value) or hex64(buf, 0)
end)

D.ack = plain("ack", ack_text)

D.log_reply = function(buf, tree, ctx)
  if buf:len() == 0 then
    return 0, true, nil
  end
  return D.ack(buf, tree, ctx)
end

local function feature_decoder(layout, key, names, name_key)
  return function(buf, tree, ctx)
    if buf:len() < 8 then
      return 0, false, nil
    end
    local item = tree:add_le(F[STRUCTS[layout][1][1]], buf(0, 8))
    local device = name_key and DEVICE_FEATURES[ctx.device or ""] and ctx.device or nil
    local words = add_bits(item, buf, key, names, device, name_key)
    return 8, true, hex64(buf, 0) .. (words ~= "" and " " .. words or "")
  end
end

D.virtio_features = feature_decoder("virtio_features", "features.bit", VALUES.VIRTIO_FEATURES,
  "features.name")
D.protocol_features = feature_decoder("protocol_features", "protocol_features.bit",
  VALUES.PROTOCOL_FEATURES, nil)
local status_decoder = feature_decoder("status", "status.bit", VALUES.STATUS_BITS, nil)
D.status = function(buf, tree, ctx)
  local off, ok, text = status_decoder(buf, tree, ctx)
  if ok and num64(buf, 0) == 0 then
    text = "0x0 RESET"
  end
  return off, ok, text
end

-- A u64 whose bits 0-7 are an index and bit 8 means "no fd".
local function index_word(buf, tree, index_key, nofd_key)
  if buf:len() < 8 then
    return false
  end
  tree:add(F[index_key], buf(0, 1), buf(0, 1):uint())
  tree:add(F[nofd_key], buf(1, 1))
  local reserved = UInt64.new(VRING_MASKS.INDEX + VRING_MASKS.NOFD):bnot()
  tree:add(F["vring.reserved"], buf(0, 8), buf(0, 8):le_uint64():band(reserved))
  return true
end

local function nofd(buf)
  return band(buf(1, 1):uint(), 1) ~= 0
end

D.vring_fd = function(buf, tree)
  if not index_word(buf, tree, "vring.index", "vring.nofd") then
    return 0, false, nil
  end
  return 8, true, "vring " .. buf(0, 1):uint() .. (nofd(buf) and " nofd" or "")
end

D.device_state_result = function(buf, tree)
  if not index_word(buf, tree, "device_state.error", "device_state.nofd") then
    return 0, false, nil
  end
  local err = buf(0, 1):uint()
  local text = (err == 0 and "ok" or "error " .. err)
  return 8, true, text .. (nofd(buf) and ", no fd" or ", back-end's fd")
end

D.vring_area = function(buf, tree)
  if not index_word(buf, tree, "vring.index", "vring.nofd") then
    return 0, false, nil
  end
  local off, ok = add_struct(buf, 8, tree, { { "area.size", 8 }, { "area.offset", 8 } })
  if not ok then
    return off, false, nil
  end
  local text = "vring " .. buf(0, 1):uint()
  if nofd(buf) then
    return off, true, text .. " unregister"
  end
  return off, true, text .. " size " .. human(num64(buf, 8)) .. " off " .. hex64(buf, 16)
end

D.rarp_mac = function(buf, tree)
  if buf:len() < 8 then
    return 0, false, nil
  end
  tree:add(F.mac, buf(0, 6))
  tree:add(F.padding, buf(6, 2))
  local mac = buf(0, 6):bytes():tohex():lower():gsub("(%x%x)", "%1:")
  return 8, true, "mac " .. mac:sub(1, -2)
end

local function vring_state_decoder(layout, describe)
  return plain(layout, function(buf)
    return "vring " .. buf(0, 4):le_uint() .. describe(buf(4, 4):le_uint())
  end)
end

D.vring_state = vring_state_decoder("vring_state", function(num) return " num=" .. num end)
D.vring_index = vring_state_decoder("vring_index", function(num)
  return num ~= 0 and " num=" .. num or ""
end)
D.vring_enable = vring_state_decoder("vring_enable", function(num)
  return " " .. name_of({ [0] = "disable", [1] = "enable" }, num, "num=")
end)
D.vring_endian = vring_state_decoder("vring_endian", function(num)
  return " " .. name_of({ [0] = "little-endian", [1] = "big-endian" }, num, "num=")
end)

D.vring_base = function(buf, tree, ctx)
  if buf:len() < 8 then
    return add_struct(buf, 0, tree, STRUCTS.vring_base), false, nil
  end
  tree:add_le(F["vring.index"], buf(0, 4))
  local num = tree:add_le(F["vring.num"], buf(4, 4))
  local text = "vring " .. buf(0, 4):le_uint()
  if ctx.packed then
    num:add_le(F["vring.last_avail_idx"], buf(4, 2))
    num:add_le(F["vring.avail_wrap"], buf(4, 2))
    num:add_le(F["vring.used_idx"], buf(6, 2))
    num:add_le(F["vring.used_wrap"], buf(6, 2))
    local avail, used = buf(4, 2):le_uint(), buf(6, 2):le_uint()
    text = text .. string.format(" avail=%d/w%d used=%d/w%d", band(avail, 0x7fff),
      avail >= 0x8000 and 1 or 0, band(used, 0x7fff), used >= 0x8000 and 1 or 0)
  else
    num:add_le(F["vring.next_avail"], buf(4, 2))
    text = text .. " base=" .. buf(4, 4):le_uint()
  end
  return 8, true, text
end

D.vring_addr = function(buf, tree)
  local off, ok = add_struct(buf, 0, tree, STRUCTS.vring_addr)
  if not ok then
    return off, false, nil
  end
  tree:add_le(F["vring.flags.log"], buf(4, 4))
  local text = string.format("vring %d desc=%s avail=%s used=%s", buf(0, 4):le_uint(),
    hex64(buf, 8), hex64(buf, 24), hex64(buf, 16))
  if band(buf(4, 4):le_uint(), 1) ~= 0 then
    text = text .. " log=" .. hex64(buf, 32)
  end
  return off, true, text
end

local function region_text(buf, off)
  return string.format("gpa %s size %s uaddr %s off %s", hex64(buf, off),
    human(num64(buf, off + 8)), hex64(buf, off + 16), hex64(buf, off + 24))
end

D.mem_table = function(buf, tree, ctx)
  if buf:len() < 8 then
    return 0, false, nil
  end
  tree:add_le(F["mem.nregions"], buf(0, 4))
  tree:add(F.padding, buf(4, 4))
  local entries = ctx.xen_mmap and STRUCTS.region_xen or STRUCTS.region
  local stride, count = struct_size(entries), buf(0, 4):le_uint()
  local off, shown = 8, {}
  for i = 0, count - 1 do
    if off + stride > buf:len() then
      return off, false, nil
    end
    local region = tree:add(buf(off, stride), "Region " .. i .. ": " .. region_text(buf, off))
    add_struct(buf, off, region, entries)
    shown[#shown + 1] = hex64(buf, off) .. "+" .. human(num64(buf, off + 8))
    off = off + stride
  end
  local text = count .. " region" .. (count == 1 and "" or "s")
  return off, true, #shown > 0 and text .. ": " .. table.concat(shown, ", ") or text
end

D.mem_region = function(buf, tree, ctx)
  local entries = ctx.xen_mmap and STRUCTS.region_xen or STRUCTS.region
  if buf:len() < 8 then
    return 0, false, nil
  end
  tree:add(F.padding, buf(0, 8))
  local off, ok = add_struct(buf, 8, tree, entries)
  return off, ok, ok and region_text(buf, 8) or nil
end

D.log = plain("log", function(buf)
  return "size " .. human(num64(buf, 0)) .. " off " .. hex64(buf, 8)
end)

D.iotlb = plain("iotlb", function(buf)
  return string.format("%s iova %s size %s uaddr %s %s",
    name_of(VALUES.IOTLB_TYPES, buf(25, 1):uint(), "type"), hex64(buf, 0),
    human(num64(buf, 8)), hex64(buf, 16), name_of(VALUES.IOTLB_PERMS, buf(24, 1):uint(), "perm"))
end)

-- The fields of the device's config space wholly inside the window (config bytes from
-- `offset`, at buf(12)), under one item; returns the summary they make, or nil.
local function add_device_config(buf, tree, offset, device)
  local fields = DEVICE_CONFIG[device or ""]
  if not fields then
    return nil
  end
  local window, sub = buf:len() - 12, nil
  local key_parts, all_parts = {}, {}
  for _, field in ipairs(fields) do
    local name, at, size, in_summary = field[1], field[2] - offset, field[3], field[4]
    if field[2] >= offset and at + size <= window then
      sub = sub or tree:add(buf(12), device .. " config")
      local range, key = buf(12 + at, size), "config." .. device .. "." .. name
      local value
      if name == "mac" then
        sub:add(F[key], range)
        local octets = {}
        for i = 0, 5 do
          octets[#octets + 1] = string.format("%02x", range(i, 1):uint())
        end
        value = table.concat(octets, ":")
      elseif name == "tag" then
        sub:add(F[key], range)
        value = "'" .. range:stringz() .. "'"
      else
        sub:add_le(F[key], range)
        local number = size == 8 and num64(buf, 12 + at) or range:le_uint()
        -- capacity counts 512-byte sectors
        value = name == "capacity" and human(number * 512) or string.format("%d", number)
      end
      all_parts[#all_parts + 1] = name .. " " .. value
      if in_summary then
        key_parts[#key_parts + 1] = name .. " " .. value
      end
    end
  end
  if #all_parts == 0 then
    return nil
  end
  return table.concat(#key_parts > 0 and key_parts or all_parts, " ")
end

D.config = function(buf, tree, ctx)
  local head = { { "config.offset", 4 }, { "config.size", 4 }, { "config.flags", 4 } }
  local off, ok = add_struct(buf, 0, tree, head)
  if not ok then
    return off, false, nil
  end
  local text = string.format("offset %d size %d %s", buf(0, 4):le_uint(), buf(4, 4):le_uint(),
    name_of(VALUES.CONFIG_FLAGS, buf(8, 4):le_uint(), "flags="))
  if buf:len() > 12 then
    tree:add(F["config.region"], buf(12))
    local data = buf(12):bytes()
    -- A window of zeros is GET_CONFIG's request (offset, size, flags and size zero
    -- bytes): it names no device field, or a blk request would read "capacity 0".
    local zeros = not data:tohex():find("[^0]")
    local named = not zeros and add_device_config(buf, tree, buf(0, 4):le_uint(),
      ctx and ctx.device) or nil
    if not zeros then
      if named then
        text = text .. " " .. named
      else
        text = text .. " data " .. data:subset(0, math.min(16, data:len())):tohex():lower()
          .. (data:len() > 16 and "..." or "")
      end
    end
  end
  return buf:len(), true, text
end

D.inflight = plain("inflight", function(buf)
  local text = buf(16, 2):le_uint() .. " queues x " .. buf(18, 2):le_uint()
  if num64(buf, 0) ~= 0 then
    text = text .. ", area " .. human(num64(buf, 0)) .. " off " .. hex64(buf, 8)
  end
  return text
end)

D.shared_uuid = function(buf, tree)
  if buf:len() < 16 then
    return 0, false, nil
  end
  tree:add(F.uuid, buf(0, 16))
  return 16, true, "uuid " .. tostring(buf(0, 16):bytes():tohex()):lower()
    :gsub("^(........)(....)(....)(....)", "%1-%2-%3-%4-")
end

D.device_state = plain("device_state", function(buf)
  return name_of(VALUES.DEVICE_STATE_DIRECTIONS, buf(0, 4):le_uint(), "dir") .. ", "
    .. name_of(VALUES.DEVICE_STATE_PHASES, buf(4, 4):le_uint(), "phase")
end)

D.shmem_map = plain("shmem_map", function(buf)
  local value = buf(32, 4):le_uint()
  local flags = band(value, 1) ~= 0 and "rw" or "ro"
  if band(value, 0xfffffffe) ~= 0 then
    flags = flags .. string.format(" +0x%x", band(value, 0xfffffffe))
  end
  return string.format("shm %d off %s len %s fd_off %s %s", buf(0, 1):uint(), hex64(buf, 16),
    human(num64(buf, 24)), hex64(buf, 8), flags)
end)

D.shmem_config = function(buf, tree)
  if buf:len() < 8 then
    return 0, false, nil
  end
  tree:add_le(F["shmem.nregions"], buf(0, 4))
  tree:add(F.padding, buf(4, 4))
  local count = math.min(math.floor((buf:len() - 8) / 8), (LAYOUT_SIZES.shmem_config - 8) / 8)
  local used = {}
  for i = 0, count - 1 do
    local off = 8 + 8 * i
    if num64(buf, off) ~= 0 then
      tree:add_le(F["shmem.memory_size"], buf(off, 8)):prepend_text("shm " .. i .. ": ")
      used[#used + 1] = ", shm " .. i .. ": " .. human(num64(buf, off))
    end
  end
  return 8 + 8 * count, 8 + 8 * count == LAYOUT_SIZES.shmem_config,
    buf(0, 4):le_uint() .. " regions" .. table.concat(used, "", 1, math.min(#used, 4))
end

D.crypto_session = function(buf, tree)
  local entries
  if buf:len() == struct_size(STRUCTS.crypto_sym) then
    entries = buf(0, 4):le_uint() == 1 and STRUCTS.crypto_asym or STRUCTS.crypto_sym
  elseif buf:len() == struct_size(STRUCTS.crypto_old) then
    entries = STRUCTS.crypto_old
  else
    tree:add(F["crypto.data"], buf())
    return buf:len(), true, "unknown layout, " .. buf:len() .. " bytes"
  end
  local off = add_struct(buf, 0, tree, entries)
  local op = entries == STRUCTS.crypto_old and buf(8, 4):le_uint() or buf(0, 4):le_uint()
  local session = buf(entries == STRUCTS.crypto_old and 0 or buf:len() - 8, 8):le_int64()
  local info = entries == STRUCTS.crypto_old and 12 or 8
  local text
  if op == 1 then
    text = "asym algo " .. buf(info, 4):le_uint() .. " keylen " .. buf(info + 8, 4):le_uint()
  else
    text = string.format("%s cipher %d key_len %d hash %d auth_key_len %d",
      name_of(VALUES.CRYPTO_OP_CODES, op, "op"), buf(info, 4):le_uint(), buf(info + 4, 4):le_uint(),
      buf(info + 8, 4):le_uint(), buf(info + 16, 4):le_uint())
  end
  return off, true, text .. " session " .. tostring(session)
end

-- --------------------------------------------------------------------------
-- What vhtrace wrote in the packet comments
-- --------------------------------------------------------------------------

local comment_field = Field.new("frame.comment")

local function read_comments()
  local meta, fds, findings = nil, {}, {}
  for _, info in ipairs({ comment_field() }) do
    local text = tostring(info.value)
    if not meta and text:sub(1, 9) == "vhtrace: " then
      meta = {}
      for key, value in text:gmatch("(%S+)=(%S+)") do
        meta[key] = value
      end
    elseif text:match("^fd %d+: ") then
      fds[#fds + 1] = text
    else
      local severity, rest = text:match("^(%a+): (.*)$")
      if severity == "error" or severity == "warning" then
        findings[#findings + 1] = { severity, rest }
      end
    end
  end
  return meta, fds, findings
end

local function context_of(meta)
  local ctx = meta.ctx or ""
  return {
    packed = ctx:find("packed", 1, true) ~= nil,
    xen_mmap = ctx:find("xen_mmap", 1, true) ~= nil,
    device = meta.device,
  }
end

local function add_meta(tree, tvb, pinfo, meta)
  local item = tree:add(tvb(0, 0), "vhtrace record")
  local function text(key, value)
    if value then
      item:add(F[key], value):set_generated()
    end
  end
  local function number(key, value, uint64)
    if value and tonumber(value) then
      item:add(F[key], uint64 and UInt64.new(tonumber(value)) or tonumber(value)):set_generated()
    end
  end
  if tonumber(meta.v or "0") > META_VERSION then
    item:add_proto_expert_info(E.meta, "metadata version " .. meta.v .. ", newer than I know")
  end
  number("session", meta.session)
  number("seq", meta.seq, true)
  text("channel", meta.channel)
  text("sender", meta.sender)
  text("role", meta.role)
  text("layout", meta.layout)
  number("answers", meta.answers, true)
  local seq = tonumber(meta.seq or "")
  if seq then
    frame_of_seq[seq] = pinfo.number
  end
  local answers = tonumber(meta.answers or "")
  if answers and frame_of_seq[answers] then
    item:add(F.request_in, frame_of_seq[answers]):set_generated()
    reply_of_seq[answers] = pinfo.number
  end
  if seq and reply_of_seq[seq] and reply_of_seq[seq] ~= pinfo.number then
    item:add(F.reply_in, reply_of_seq[seq]):set_generated()
  end
end

-- --------------------------------------------------------------------------
-- The dissector
-- --------------------------------------------------------------------------

local SIDES = { frontend = { "frontend", "backend" }, backend = { "backend", "frontend" } }

function vhost_user.dissector(tvb, pinfo, tree)
  pinfo.cols.protocol = "vhost-user"
  local meta, fds, findings = read_comments()
  meta = meta or {}
  local channel = REQUESTS[meta.channel or ""] and meta.channel or "main"
  local root = tree:add(vhost_user, tvb())
  if next(meta) then
    add_meta(root, tvb, pinfo, meta)
  end
  local sides = SIDES[meta.sender or ""]
  if sides then
    pinfo.cols.src, pinfo.cols.dst = sides[1], sides[2]
  end

  local info = {}
  if channel ~= "main" then
    info[#info + 1] = "[" .. channel .. "]"
  end
  if tvb:len() < HEADER_SIZE then
    root:add(F.payload, tvb())
    root:add_proto_expert_info(E.header_cut,
      "message cut inside its header (" .. tvb:len() .. " bytes)")
    info[#info + 1] = "message cut inside its header"
    pinfo.cols.info = table.concat(info, " ")
    return tvb:len()
  end

  local request, flags, size = tvb(0, 4):le_uint(), tvb(4, 4):le_uint(), tvb(8, 4):le_uint()
  local row = REQUESTS[channel][request]
  local name = row and row.name or ("UNKNOWN(" .. request .. ")")
  local is_reply = band(flags, FLAGS.REPLY) ~= 0
  root:append_text(", " .. name .. (is_reply and " reply" or ""))
  root:add_le(F.request, tvb(0, 4)):append_text(" (" .. name .. ")")
  root:add(F.request_name, tvb(0, 4), name):set_generated()
  local flag_item = root:add_le(F.flags, tvb(4, 4))
  for _, key in ipairs({ "flags.version", "flags.reply", "flags.need_reply", "flags.reserved" }) do
    flag_item:add_le(F[key], tvb(4, 4))
  end
  root:add_le(F.size, tvb(8, 4))

  local layout = meta.layout
  if not layout and row then
    layout = is_reply and row.reply or row.payload
  end
  local kept = tvb:len() - HEADER_SIZE
  local length = math.min(size, kept)
  local cut = size > kept -- the recorder kept only a prefix: no "too short" on top of that
  local summary
  if not row then
    root:add_proto_expert_info(E.unknown, "request id " .. request .. " is not in the spec")
  end
  if length == 0 then
    if layout and not cut and LAYOUT_SIZES[layout] ~= 0 and layout ~= "log_reply" then
      root:add_proto_expert_info(E.short, "no payload, layout " .. layout .. " needs one")
    end
  else
    local decode = layout and D[layout]
    local payload_tree = root:add(tvb(HEADER_SIZE, length),
      "Payload" .. (layout and " (" .. layout .. ")" or "") .. ", " .. length .. " bytes")
    local done, complete = 0, true
    if decode then
      local buf = tvb(HEADER_SIZE, length):tvb()
      done, complete, summary = decode(buf, payload_tree, context_of(meta))
    end
    if done < length then
      local rest = tvb(HEADER_SIZE + done, length - done)
      payload_tree:add(decode and complete and F.trailing or F.payload, rest)
      if decode and complete then
        payload_tree:add_proto_expert_info(E.trailing,
          (length - done) .. " bytes beyond the " .. layout .. " layout")
      end
    end
    if decode and not complete and not cut then
      payload_tree:add_proto_expert_info(E.short, length .. " bytes do not hold a whole " .. layout)
    end
  end
  if cut then
    root:add_proto_expert_info(E.cut, "size " .. size .. ", " .. kept .. " payload bytes recorded"
      .. (meta.cut and " (" .. meta.cut .. ")" or ""))
  elseif kept > size then
    root:add(F.after_size, tvb(HEADER_SIZE + size))
    root:add_proto_expert_info(E.after_size, (kept - size) .. " bytes after the message's size")
  end

  for _, text in ipairs(fds) do
    root:add(F.fd, text):set_generated()
  end
  local errors, warnings = 0, 0
  for _, finding in ipairs(findings) do
    local is_error = finding[1] == "error"
    root:add(F.finding, finding[2]):set_generated()
    root:add_proto_expert_info(is_error and E.finding_error or E.finding_warning, finding[2])
    errors, warnings = errors + (is_error and 1 or 0), warnings + (is_error and 0 or 1)
  end

  info[#info + 1] = name
  if meta.role == "reply" or (not meta.role and is_reply) then
    info[#info + 1] = "reply"
  elseif meta.role == "postcopy-ack" then
    info[#info + 1] = "postcopy-ack"
  end
  if band(flags, FLAGS.NEED_REPLY) ~= 0 then
    info[#info + 1] = "need_reply"
  end
  if summary and summary ~= "" then
    info[#info + 1] = summary
  end
  if #fds > 0 then
    info[#info + 1] = "fds=" .. #fds
  end
  if errors > 0 then
    info[#info + 1] = "[" .. errors .. " error" .. (errors > 1 and "s" or "") .. "]"
  end
  if warnings > 0 then
    info[#info + 1] = "[" .. warnings .. " warning" .. (warnings > 1 and "s" or "") .. "]"
  end
  pinfo.cols.info = table.concat(info, " ")
  return tvb:len()
end

-- The exported-PDU dissector finds us by name; DLT_USER0 captures need the table.
local encaps = wtap_encaps or wtap
DissectorTable.get("wtap_encap"):add(encaps.USER0, vhost_user)
