"""The vhost-user protocol as data.

Every fact of the protocol that the rest of vhtrace needs (request ids and
names, which payload layout a request and its reply carry, how many file
descriptors ride with it, when a reply is owed, which feature gates it, the
feature bits and the header flags) is written here once, as table rows.
Everything else asks this module; nothing else has its own ``if request == 5``.

Sources: QEMU ``docs/interop/vhost-user.rst`` (newest copy with protocol bits
20-23, requests 44-45, back-end requests 9-10), QEMU ``hw/virtio/vhost-user.c``,
libvhost-user, DPDK ``lib/vhost`` and rust-vmm ``vhost``. Names follow the
newest spec (FRONTEND/BACKEND); the old SLAVE_* names are accepted as aliases.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# --------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------

HEADER_SIZE = 12
"""u32 request, u32 flags, u32 size, in host byte order."""

VERSION = 0x1
VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
RESERVED_FLAGS_MASK = 0xFFFFFFF0
REPLY_FLAGS = VERSION | FLAG_REPLY
"""QEMU rejects any reply whose flags are not exactly this (0x5)."""

MAX_PAYLOAD = 0x1000
"""The largest payload any implementation accepts (rust-vmm's MAX_MSG_SIZE).

QEMU's own payload union is smaller (about 2 KiB with the shmem config); a
size above this is certainly malformed and is never allocated."""

MAX_FDS = 8
"""fds per message that QEMU, libvhost-user and DPDK accept (rust-vmm: 32)."""

SCM_MAX_FD = 253
"""The most fds the kernel passes with one sendmsg/recvmsg (include/net/scm.h)."""

MAX_MEM_REGIONS = 8
"""Regions in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS)."""

MAX_RAM_SLOTS = 512
"""Most memory slots a front-end uses with CONFIGURE_MEM_SLOTS (VHOST_USER_MAX_RAM_SLOTS)."""

MAX_CONFIG_SIZE = 256
"""VHOST_USER_MAX_CONFIG_SIZE in QEMU, libvhost-user and DPDK."""

MAX_VRINGS = 0x8000
"""The largest ring count any implementation accepts (rust-vmm's VHOST_USER_MAX_VRINGS)."""

MAX_VRING_INDEX = 0xFFFF
"""A virtqueue index is 16 bits wide (queue_select)."""

VRING_IDX_MASK = 0xFF
VRING_NOFD_MASK = 0x100
"""kick/call/err u64: bits 0-7 ring index, bit 8 'no fd attached'."""


def packed_vring_base(num: int) -> tuple[int, bool, int, bool]:
    """SET/GET_VRING_BASE's num for a packed ring (VIRTIO_F_RING_PACKED): last avail
    index, its wrap counter, used index, its wrap counter (15 bits and a bit each)."""
    return num & 0x7FFF, bool(num >> 15 & 1), num >> 16 & 0x7FFF, bool(num >> 31 & 1)


def packed_vring_num(avail_idx: int, avail_wrap: bool, used_idx: int, used_wrap: bool) -> int:
    """The inverse of :func:`packed_vring_base`."""
    return (
        avail_idx & 0x7FFF | int(bool(avail_wrap)) << 15
        | (used_idx & 0x7FFF) << 16 | int(bool(used_wrap)) << 31
    )  # fmt: skip


VRING_F_LOG = 0x1
"""SET_VRING_ADDR flags bit 0: log used-ring writes."""

PAGE_SIZE = 0x1000
"""Dirty-log page size."""

SHMEM_MAX_REGIONS = 256


class Channel(enum.StrEnum):
    """Which socket a message travelled on."""

    MAIN = "main"
    """The front-end's connection to the back-end (front-end requests)."""
    BACKEND = "backend"
    """The socketpair passed with SET_BACKEND_REQ_FD (back-end requests)."""
    GPU = "gpu"
    """The socket passed with GPU_SET_SOCKET: the vhost-user-gpu protocol, not framed here."""
    DEVICE_STATE = "device-state"
    """The pipe passed with SET_DEVICE_STATE_FD: a byte stream of the device's state."""

    @property
    def framed(self) -> bool:
        """True for the channels that carry vhost-user messages (header + payload)."""
        return self in FRAMED_CHANNELS


FRAMED_CHANNELS = (Channel.MAIN, Channel.BACKEND)
"""The channels of vhost-user frames; the others are streams relayed and recorded as bytes."""


class Side(enum.StrEnum):
    """Who sent a message."""

    FRONTEND = "frontend"
    BACKEND = "backend"

    @property
    def peer(self) -> Side:
        return Side.BACKEND if self is Side.FRONTEND else Side.FRONTEND

    @property
    def short(self) -> str:
        return "FE" if self is Side.FRONTEND else "BE"


def requester(channel: Channel) -> Side:
    """The side that sends requests on a channel (the other one replies)."""
    return Side.FRONTEND if channel is Channel.MAIN else Side.BACKEND


# --------------------------------------------------------------------------
# Feature bits
# --------------------------------------------------------------------------


class ProtocolFeature(enum.IntEnum):
    """Bits of GET/SET_PROTOCOL_FEATURES."""

    MQ = 0
    LOG_SHMFD = 1
    RARP = 2
    REPLY_ACK = 3
    NET_MTU = 4
    BACKEND_REQ = 5
    CROSS_ENDIAN = 6
    CRYPTO_SESSION = 7
    PAGEFAULT = 8
    CONFIG = 9
    BACKEND_SEND_FD = 10
    HOST_NOTIFIER = 11
    INFLIGHT_SHMFD = 12
    RESET_DEVICE = 13
    INBAND_NOTIFICATIONS = 14
    CONFIGURE_MEM_SLOTS = 15
    STATUS = 16
    XEN_MMAP = 17
    SHARED_OBJECT = 18
    DEVICE_STATE = 19
    GET_VRING_BASE_INFLIGHT = 20
    GPA_ADDRESSES = 21
    SHMEM = 22
    GET_VRING_BASE_SKIP_DRAIN = 23


PROTOCOL_FEATURE_ALIASES: dict[str, ProtocolFeature] = {
    "SLAVE_REQ": ProtocolFeature.BACKEND_REQ,
    "SLAVE_SEND_FD": ProtocolFeature.BACKEND_SEND_FD,
    "MTU": ProtocolFeature.NET_MTU,
    "SHMEM_MAP": ProtocolFeature.SHMEM,
}


QEMU_FIRST_WITH: dict[ProtocolFeature, str] = {
    ProtocolFeature.SHARED_OBJECT: "8.2",
    ProtocolFeature.DEVICE_STATE: "8.2",
    ProtocolFeature.GET_VRING_BASE_INFLIGHT: "11.0",
    ProtocolFeature.GPA_ADDRESSES: "11.1",
    ProtocolFeature.SHMEM: "11.1",
    ProtocolFeature.GET_VRING_BASE_SKIP_DRAIN: "11.2",
}
"""The first QEMU release whose front-end negotiates the bit, for bits QEMU 7.2 (the QEMU
vhtrace is tested with here) does not know: its VhostUserProtocolFeature enum ends at
STATUS (16). Releases as read from QEMU's hw/virtio/vhost-user.c and docs/interop on mst's
``next`` branch (Sep 2026): DEVICE_STATE and SHARED_OBJECT 8.2, GET_VRING_BASE_INFLIGHT
11.x (taken as 11.0), GPA_ADDRESSES and SHMEM 11.1, SKIP_DRAIN after 11.1 (taken as
11.2). A trace that negotiated one was recorded with a QEMU at least that new, or with
another front-end."""


def protocol_feature(name_or_bit: str | int) -> ProtocolFeature:
    """Look up a protocol feature by bit, name, alias or full C name."""
    if isinstance(name_or_bit, int):
        return ProtocolFeature(name_or_bit)
    name = name_or_bit.strip().upper().removeprefix("VHOST_USER_PROTOCOL_F_")
    if name.isdigit():
        return ProtocolFeature(int(name))
    if name in PROTOCOL_FEATURE_ALIASES:
        return PROTOCOL_FEATURE_ALIASES[name]
    return ProtocolFeature[name]


class DeviceType(enum.StrEnum):
    """Device types whose virtio feature bits vhtrace names (the vhost-user back-ends
    users meet: QEMU's, DPDK's, rust-vmm's vhost-device-*)."""

    BLK = "blk"
    NET = "net"
    FS = "fs"
    SCSI = "scsi"
    GPU = "gpu"
    VSOCK = "vsock"
    I2C = "i2c"
    GPIO = "gpio"
    RNG = "rng"
    SOUND = "sound"
    INPUT = "input"
    CAN = "can"
    SCMI = "scmi"
    CRYPTO = "crypto"


VIRTIO_F_PROTOCOL_FEATURES = 30
"""VHOST_USER_F_PROTOCOL_FEATURES: the back-end speaks GET/SET_PROTOCOL_FEATURES."""
VIRTIO_F_LOG_ALL = 26
VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_RING_PACKED = 34

COMMON_VIRTIO_FEATURES: dict[int, str] = {
    24: "NOTIFY_ON_EMPTY",
    26: "LOG_ALL",
    27: "ANY_LAYOUT",
    28: "RING_INDIRECT_DESC",
    29: "RING_EVENT_IDX",
    30: "PROTOCOL_FEATURES",
    32: "VERSION_1",
    33: "ACCESS_PLATFORM",
    34: "RING_PACKED",
    35: "IN_ORDER",
    36: "ORDER_PLATFORM",
    37: "SR_IOV",
    38: "NOTIFICATION_DATA",
    39: "NOTIF_CONFIG_DATA",
    40: "RING_RESET",
    41: "ADMIN_VQ",
}
"""Transport and vhost bits shared by every device (26 and 30 are vhost's own)."""

DEVICE_VIRTIO_FEATURES: dict[DeviceType, dict[int, str]] = {
    DeviceType.BLK: {
        0: "BARRIER",
        1: "SIZE_MAX",
        2: "SEG_MAX",
        4: "GEOMETRY",
        5: "RO",
        6: "BLK_SIZE",
        7: "SCSI",
        9: "FLUSH",
        10: "TOPOLOGY",
        11: "CONFIG_WCE",
        12: "MQ",
        13: "DISCARD",
        14: "WRITE_ZEROES",
        15: "LIFETIME",
        16: "SECURE_ERASE",
        17: "ZONED",
    },
    DeviceType.NET: {
        0: "CSUM",
        1: "GUEST_CSUM",
        2: "CTRL_GUEST_OFFLOADS",
        3: "MTU",
        5: "MAC",
        6: "GSO",
        7: "GUEST_TSO4",
        8: "GUEST_TSO6",
        9: "GUEST_ECN",
        10: "GUEST_UFO",
        11: "HOST_TSO4",
        12: "HOST_TSO6",
        13: "HOST_ECN",
        14: "HOST_UFO",
        15: "MRG_RXBUF",
        16: "STATUS",
        17: "CTRL_VQ",
        18: "CTRL_RX",
        19: "CTRL_VLAN",
        20: "CTRL_RX_EXTRA",
        21: "GUEST_ANNOUNCE",
        22: "MQ",
        23: "CTRL_MAC_ADDR",
        52: "VQ_NOTF_COAL",
        53: "NOTF_COAL",
        54: "GUEST_USO4",
        55: "GUEST_USO6",
        56: "HOST_USO",
        57: "HASH_REPORT",
        59: "GUEST_HDRLEN",
        60: "RSS",
        61: "RSC_EXT",
        62: "STANDBY",
        63: "SPEED_DUPLEX",
    },
    DeviceType.FS: {0: "NOTIFICATION"},
    DeviceType.SCSI: {0: "INOUT", 1: "HOTPLUG", 2: "CHANGE", 3: "T10_PI"},
    # virtio 1.3, "Feature bits" of each device; CAN from the virtio-can draft (1.4).
    DeviceType.GPU: {
        0: "VIRGL",
        1: "EDID",
        2: "RESOURCE_UUID",
        3: "RESOURCE_BLOB",
        4: "CONTEXT_INIT",
    },
    DeviceType.VSOCK: {0: "STREAM", 1: "SEQPACKET"},
    DeviceType.I2C: {0: "ZERO_LENGTH_REQUEST"},
    DeviceType.GPIO: {0: "IRQ"},
    DeviceType.RNG: {},
    DeviceType.SOUND: {0: "CTLS"},
    DeviceType.INPUT: {},
    DeviceType.CAN: {0: "CAN_CLASSIC", 1: "CAN_FD", 2: "LATE_TX_ACK", 3: "RTR_FRAMES"},
    DeviceType.SCMI: {0: "P2A_CHANNELS", 1: "SHARED_MEMORY"},
    DeviceType.CRYPTO: {
        0: "REVISION_1",
        1: "CIPHER_STATELESS_MODE",
        2: "HASH_STATELESS_MODE",
        3: "MAC_STATELESS_MODE",
        4: "AEAD_STATELESS_MODE",
        5: "AKCIPHER_STATELESS_MODE",
    },
}

VIRTIO_STATUS_BITS: dict[int, str] = {
    0: "ACKNOWLEDGE",
    1: "DRIVER",
    2: "DRIVER_OK",
    3: "FEATURES_OK",
    6: "NEEDS_RESET",
    7: "FAILED",
}
VIRTIO_STATUS_FEATURES_OK = 1 << 3
"""The status bit a driver sets once the device accepted its features (bit 3 above)."""


def virtio_feature_name(bit: int, device: DeviceType | None = None) -> str:
    """Name of a virtio feature bit, as in the virtio spec without its VIRTIO_*_F_ prefix.

    Device bits (0-23, 50 and up) have a name only when the device type is known."""
    if bit in COMMON_VIRTIO_FEATURES:
        return COMMON_VIRTIO_FEATURES[bit]
    if device is not None and bit in DEVICE_VIRTIO_FEATURES.get(device, {}):
        return DEVICE_VIRTIO_FEATURES[device][bit]
    return f"bit{bit}"


def bits_of(value: int) -> list[int]:
    """The set bit positions of an integer, lowest first."""
    return [bit for bit in range(value.bit_length()) if value >> bit & 1]


def virtio_feature_names(value: int, device: DeviceType | None = None) -> list[str]:
    return [virtio_feature_name(bit, device) for bit in bits_of(value)]


def protocol_feature_names(value: int) -> list[str]:
    names = []
    for bit in bits_of(value):
        try:
            names.append(ProtocolFeature(bit).name)
        except ValueError:
            names.append(f"bit{bit}")
    return names


def flag_names(flags: int) -> list[str]:
    """Header flags as words, for display."""
    names = [f"V{flags & VERSION_MASK}"]
    if flags & FLAG_REPLY:
        names.append("REPLY")
    if flags & FLAG_NEED_REPLY:
        names.append("NEED_REPLY")
    if flags & RESERVED_FLAGS_MASK:
        names.append(f"RESERVED=0x{flags & RESERVED_FLAGS_MASK:x}")
    return names


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


REM_MEM_REG_FD_NOTE = (
    "REM_MEM_REG should carry none (the spec; a back-end must close one it gets); "
    "QEMU 5.1 to 6.x sent the region's fd, QEMU 7.2 sends none"
)
"""What a fd on REM_MEM_REG means. The spec (vhost-user.rst, REM_MEM_REG) says the
front-end should send no fd but may, for compatibility, and the back-end must close it.
QEMU's send_remove_regions() wrote the message with ``vhost_user_write(dev, msg, &fd, 1)``
from its introduction in 5.1 (the patch adding ADD/REM_MEM_REG, and a later 6.x copy of
hw/virtio/vhost-user.c read here, where fill_msg_region() takes an offset); qemu/qemu
019fbfa4bcd2 writes it with ``vhost_user_write(dev, msg, NULL, 0)``, and QEMU 7.2 (Debian
12) sends none: recorded here, tests/fixtures/qemu-rem-mem-reg/. Allowed, so a warning
whoever sends it: an fd means an old front-end."""


class Fds(enum.Enum):
    """How many file descriptors ride with a message."""

    NONE = "none"
    ONE = "one"
    OPTIONAL = "zero or one"
    TOLERATED = "none (one tolerated: the back-end must close it)"
    """The spec wants none, allows one for old front-ends (REM_MEM_REG)."""
    PER_REGION = "one per region"
    UNLESS_NOFD = "one unless the NOFD bit is set"
    IF_LOG_SHMFD = "one if LOG_SHMFD was negotiated"


class Reply(enum.Enum):
    """When the receiver of a request owes a reply."""

    ACK = "ack"
    """Only with NEED_REPLY under REPLY_ACK: a u64, 0 = success."""
    ALWAYS = "always"
    """An intrinsic reply with its own payload (NEED_REPLY changes nothing)."""
    IF_LOG_SHMFD = "if LOG_SHMFD"
    """SET_LOG_BASE: a reply iff LOG_SHMFD was negotiated."""
    POSTCOPY = "postcopy"
    """SET_MEM_TABLE / ADD_MEM_REG: after POSTCOPY_LISTEN the back-end replies
    with its own mapping addresses and the front-end acks with a u64 0;
    otherwise as ACK."""


@dataclass(frozen=True)
class Gate:
    """The feature that must be negotiated before a request may be sent."""

    protocol: ProtocolFeature | None = None
    virtio_offered: int | None = None
    """A virtio bit the back-end must have offered in GET_FEATURES."""
    virtio_acked: int | None = None
    """A virtio bit the front-end must have set with SET_FEATURES."""

    def describe(self) -> str:
        if self.protocol is not None:
            return self.protocol.name
        bit = self.virtio_offered if self.virtio_offered is not None else self.virtio_acked
        assert bit is not None
        return virtio_feature_name(bit)


@dataclass(frozen=True)
class RequestSpec:
    """One row of the request table."""

    id: int
    name: str
    channel: Channel
    payload: str
    """Layout name of the request payload (see payloads.LAYOUTS)."""
    fds: Fds = Fds.NONE
    reply: Reply = Reply.ACK
    reply_payload: str = "ack"
    reply_fds: Fds = Fds.NONE
    gate: Gate | None = None
    aliases: tuple[str, ...] = ()
    per_device: bool = False
    """QEMU sends it once per device, not per vhost_dev (multiqueue net)."""
    notes: str = ""
    postcopy_payload: str | None = field(default=None)
    """Layout of the postcopy reply (Reply.POSTCOPY)."""
    reply_fd_kind: str | None = None
    """What the fd of the reply is (userfaultfd, memfd, dma-buf, pipe), when it carries one."""
    sets_need_reply: bool = False
    """The spec says the front-end always sets NEED_REPLY on it (POSTCOPY_LISTEN/END,
    IOTLB_MSG: vhost-user.rst, "the front-end always sets NEED_REPLY"; QEMU does)."""
    opens: Channel | None = None
    """The fd it carries opens another channel: 'backend' (the back-end channel, same
    framing), 'gpu' (the vhost-user-gpu protocol) or 'device-state' (a byte stream).
    A recording proxy interposes on such fds to see what travels over them."""

    @property
    def c_name(self) -> str:
        prefix = "VHOST_USER_" if self.channel is Channel.MAIN else "VHOST_USER_BACKEND_"
        return prefix + self.name


def _p(bit: ProtocolFeature) -> Gate:
    return Gate(protocol=bit)


PF = ProtocolFeature

# fmt: off
FRONTEND_REQUESTS: tuple[RequestSpec, ...] = (
    RequestSpec(1, "GET_FEATURES", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                reply_payload="virtio_features"),
    RequestSpec(2, "SET_FEATURES", Channel.MAIN, "virtio_features"),
    RequestSpec(3, "SET_OWNER", Channel.MAIN, "empty", per_device=True),
    RequestSpec(4, "RESET_OWNER", Channel.MAIN, "empty", per_device=True, notes="deprecated"),
    RequestSpec(5, "SET_MEM_TABLE", Channel.MAIN, "mem_table", fds=Fds.PER_REGION,
                reply=Reply.POSTCOPY, postcopy_payload="mem_table", per_device=True),
    RequestSpec(6, "SET_LOG_BASE", Channel.MAIN, "log", fds=Fds.IF_LOG_SHMFD,
                reply=Reply.IF_LOG_SHMFD, reply_payload="log_reply", per_device=True),
    RequestSpec(7, "SET_LOG_FD", Channel.MAIN, "empty", fds=Fds.ONE),
    RequestSpec(8, "SET_VRING_NUM", Channel.MAIN, "vring_state"),
    RequestSpec(9, "SET_VRING_ADDR", Channel.MAIN, "vring_addr"),
    RequestSpec(10, "SET_VRING_BASE", Channel.MAIN, "vring_base"),
    RequestSpec(11, "GET_VRING_BASE", Channel.MAIN, "vring_index", reply=Reply.ALWAYS,
                reply_payload="vring_base"),
    RequestSpec(12, "SET_VRING_KICK", Channel.MAIN, "vring_fd", fds=Fds.UNLESS_NOFD),
    RequestSpec(13, "SET_VRING_CALL", Channel.MAIN, "vring_fd", fds=Fds.UNLESS_NOFD),
    RequestSpec(14, "SET_VRING_ERR", Channel.MAIN, "vring_fd", fds=Fds.UNLESS_NOFD),
    RequestSpec(15, "GET_PROTOCOL_FEATURES", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                reply_payload="protocol_features",
                gate=Gate(virtio_offered=VIRTIO_F_PROTOCOL_FEATURES)),
    RequestSpec(16, "SET_PROTOCOL_FEATURES", Channel.MAIN, "protocol_features",
                gate=Gate(virtio_offered=VIRTIO_F_PROTOCOL_FEATURES)),
    RequestSpec(17, "GET_QUEUE_NUM", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                reply_payload="u64", gate=_p(PF.MQ), per_device=True),
    RequestSpec(18, "SET_VRING_ENABLE", Channel.MAIN, "vring_enable",
                gate=Gate(virtio_offered=VIRTIO_F_PROTOCOL_FEATURES)),
    RequestSpec(19, "SEND_RARP", Channel.MAIN, "rarp_mac", gate=_p(PF.RARP)),
    RequestSpec(20, "NET_SET_MTU", Channel.MAIN, "u64", gate=_p(PF.NET_MTU), per_device=True),
    RequestSpec(21, "SET_BACKEND_REQ_FD", Channel.MAIN, "empty", fds=Fds.ONE,
                gate=_p(PF.BACKEND_REQ), aliases=("SET_SLAVE_REQ_FD",), opens=Channel.BACKEND),
    RequestSpec(22, "IOTLB_MSG", Channel.MAIN, "iotlb", reply=Reply.ALWAYS, sets_need_reply=True,
                gate=Gate(virtio_acked=VIRTIO_F_ACCESS_PLATFORM)),
    RequestSpec(23, "SET_VRING_ENDIAN", Channel.MAIN, "vring_endian", gate=_p(PF.CROSS_ENDIAN)),
    RequestSpec(24, "GET_CONFIG", Channel.MAIN, "config", reply=Reply.ALWAYS,
                reply_payload="config", gate=_p(PF.CONFIG)),
    RequestSpec(25, "SET_CONFIG", Channel.MAIN, "config", gate=_p(PF.CONFIG)),
    RequestSpec(26, "CREATE_CRYPTO_SESSION", Channel.MAIN, "crypto_session", reply=Reply.ALWAYS,
                reply_payload="crypto_session", gate=_p(PF.CRYPTO_SESSION)),
    RequestSpec(27, "CLOSE_CRYPTO_SESSION", Channel.MAIN, "u64", gate=_p(PF.CRYPTO_SESSION)),
    RequestSpec(28, "POSTCOPY_ADVISE", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                reply_payload="empty", reply_fds=Fds.ONE, reply_fd_kind="userfaultfd",
                gate=_p(PF.PAGEFAULT), notes="the reply carries the back-end's userfaultfd"),
    RequestSpec(29, "POSTCOPY_LISTEN", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                sets_need_reply=True,
                gate=_p(PF.PAGEFAULT)),
    RequestSpec(30, "POSTCOPY_END", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                sets_need_reply=True,
                gate=_p(PF.PAGEFAULT)),
    RequestSpec(31, "GET_INFLIGHT_FD", Channel.MAIN, "inflight", reply=Reply.ALWAYS,
                reply_payload="inflight", reply_fds=Fds.ONE, reply_fd_kind="memfd",
                gate=_p(PF.INFLIGHT_SHMFD)),
    RequestSpec(32, "SET_INFLIGHT_FD", Channel.MAIN, "inflight", fds=Fds.ONE,
                gate=_p(PF.INFLIGHT_SHMFD)),
    RequestSpec(33, "GPU_SET_SOCKET", Channel.MAIN, "empty", fds=Fds.ONE, opens=Channel.GPU),
    RequestSpec(34, "RESET_DEVICE", Channel.MAIN, "empty", gate=_p(PF.RESET_DEVICE),
                per_device=True),
    RequestSpec(35, "VRING_KICK", Channel.MAIN, "vring_index", gate=_p(PF.INBAND_NOTIFICATIONS)),
    RequestSpec(36, "GET_MAX_MEM_SLOTS", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                reply_payload="u64", gate=_p(PF.CONFIGURE_MEM_SLOTS)),
    RequestSpec(37, "ADD_MEM_REG", Channel.MAIN, "mem_region", fds=Fds.ONE, reply=Reply.POSTCOPY,
                postcopy_payload="mem_region", gate=_p(PF.CONFIGURE_MEM_SLOTS), per_device=True),
    RequestSpec(38, "REM_MEM_REG", Channel.MAIN, "mem_region", fds=Fds.TOLERATED,
                gate=_p(PF.CONFIGURE_MEM_SLOTS), per_device=True, notes=REM_MEM_REG_FD_NOTE),
    RequestSpec(39, "SET_STATUS", Channel.MAIN, "status", gate=_p(PF.STATUS)),
    RequestSpec(40, "GET_STATUS", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                reply_payload="status", gate=_p(PF.STATUS)),
    RequestSpec(41, "GET_SHARED_OBJECT", Channel.MAIN, "shared_uuid", reply=Reply.ALWAYS,
                reply_payload="u64", reply_fds=Fds.ONE, reply_fd_kind="dma-buf",
                gate=_p(PF.SHARED_OBJECT),
                notes="QEMU requires the reply's fd: vhost_user_get_shared_object() fails"
                      " with 'Failed to get dmabuf fd' without it (hw/virtio/vhost-user.c)"),
    RequestSpec(42, "SET_DEVICE_STATE_FD", Channel.MAIN, "device_state", fds=Fds.ONE,
                reply=Reply.ALWAYS, reply_payload="device_state_result", reply_fds=Fds.OPTIONAL,
                gate=_p(PF.DEVICE_STATE), opens=Channel.DEVICE_STATE, reply_fd_kind="pipe"),
    RequestSpec(43, "CHECK_DEVICE_STATE", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                reply_payload="u64", gate=_p(PF.DEVICE_STATE)),
    RequestSpec(44, "GET_SHMEM_CONFIG", Channel.MAIN, "empty", reply=Reply.ALWAYS,
                reply_payload="shmem_config", gate=_p(PF.SHMEM)),
    RequestSpec(45, "GET_VRING_BASE_SKIP_DRAIN", Channel.MAIN, "vring_index", reply=Reply.ALWAYS,
                reply_payload="vring_base", gate=_p(PF.GET_VRING_BASE_SKIP_DRAIN)),
)
# fmt: on

# fmt: off
BACKEND_REQUESTS: tuple[RequestSpec, ...] = (
    RequestSpec(1, "IOTLB_MSG", Channel.BACKEND, "iotlb",
                gate=Gate(virtio_acked=VIRTIO_F_ACCESS_PLATFORM), aliases=("SLAVE_IOTLB_MSG",)),
    RequestSpec(2, "CONFIG_CHANGE_MSG", Channel.BACKEND, "empty", gate=_p(PF.CONFIG),
                aliases=("SLAVE_CONFIG_CHANGE_MSG",)),
    RequestSpec(3, "VRING_HOST_NOTIFIER_MSG", Channel.BACKEND, "vring_area", fds=Fds.UNLESS_NOFD,
                gate=_p(PF.HOST_NOTIFIER), aliases=("SLAVE_VRING_HOST_NOTIFIER_MSG",)),
    RequestSpec(4, "VRING_CALL", Channel.BACKEND, "vring_index", gate=_p(PF.INBAND_NOTIFICATIONS),
                aliases=("SLAVE_VRING_CALL",)),
    RequestSpec(5, "VRING_ERR", Channel.BACKEND, "vring_index", gate=_p(PF.INBAND_NOTIFICATIONS),
                aliases=("SLAVE_VRING_ERR",)),
    RequestSpec(6, "SHARED_OBJECT_ADD", Channel.BACKEND, "shared_uuid",
                gate=_p(PF.SHARED_OBJECT)),
    RequestSpec(7, "SHARED_OBJECT_REMOVE", Channel.BACKEND, "shared_uuid",
                gate=_p(PF.SHARED_OBJECT)),
    RequestSpec(8, "SHARED_OBJECT_LOOKUP", Channel.BACKEND, "shared_uuid", reply=Reply.ALWAYS,
                reply_payload="u64", reply_fds=Fds.OPTIONAL, reply_fd_kind="dma-buf",
                gate=_p(PF.SHARED_OBJECT)),
    RequestSpec(9, "SHMEM_MAP", Channel.BACKEND, "shmem_map", fds=Fds.ONE, gate=_p(PF.SHMEM)),
    RequestSpec(10, "SHMEM_UNMAP", Channel.BACKEND, "shmem_map", gate=_p(PF.SHMEM)),
)
# fmt: on

REQUESTS: dict[Channel, dict[int, RequestSpec]] = {
    Channel.MAIN: {spec.id: spec for spec in FRONTEND_REQUESTS},
    Channel.BACKEND: {spec.id: spec for spec in BACKEND_REQUESTS},
}


def request_spec(channel: Channel, request_id: int) -> RequestSpec | None:
    """The table row of a request id on a channel, or None if the id is unknown."""
    return REQUESTS[channel].get(request_id)


def request_name(channel: Channel, request_id: int) -> str:
    """A request's name, or ``UNKNOWN(n)`` for ids outside the table."""
    spec = REQUESTS[channel].get(request_id)
    return spec.name if spec else f"UNKNOWN({request_id})"


def _name_index() -> dict[str, tuple[Channel, int]]:
    index: dict[str, tuple[Channel, int]] = {}
    for channel in (Channel.BACKEND, Channel.MAIN):  # main wins the bare IOTLB_MSG
        for row in REQUESTS[channel].values():
            key = (channel, row.id)
            index[row.name] = key
            for alias in row.aliases:
                index[alias] = key
            if channel is Channel.BACKEND:
                index["BACKEND_" + row.name] = key
    return index


_BY_NAME = _name_index()


def lookup_request(name: str) -> tuple[Channel, int] | None:
    """Find a request by name, alias or C name (``VHOST_USER_SET_SLAVE_REQ_FD``).

    Back-end channel names may be given with their ``BACKEND_`` or ``SLAVE_``
    prefix; a bare ``IOTLB_MSG`` means the front-end's."""
    key = name.strip().upper().removeprefix("VHOST_USER_")
    return _BY_NAME.get(key)


FEATURE_OF_FDS_ON_BACKEND_CHANNEL = ProtocolFeature.BACKEND_SEND_FD
"""fds on the back-end channel need BACKEND_SEND_FD."""

# --------------------------------------------------------------------------
# What QEMU as the front-end does not do as the spec has it
# --------------------------------------------------------------------------

FRONTEND_QEMU = "qemu"
"""The session context's name for a QEMU front-end (see vhtrace.protocol.peers)."""

QEMU_UNHANDLED_BACKEND_REQUESTS: frozenset[int] = frozenset({4, 5})
"""Back-end requests QEMU's back-end channel refuses: VRING_CALL (4) and VRING_ERR (5).

The spec defines them (under INBAND_NOTIFICATIONS), but QEMU's VhostUserBackendRequest
enum stops at 1-3 and 6-8 (and 9-10 on mst's ``next``), and ``backend_read()`` answers any
other id with "Received unexpected msg type" and ret = -EINVAL, i.e. a failure ack (u64 1)
when NEED_REPLY is set (QEMU hw/virtio/vhost-user.c, commit 019fbfa4bcd2 as stored, and
mst's ``next``, Sep 2026): the notification never reaches the guest."""
