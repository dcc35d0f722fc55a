"""The device config space that GET_CONFIG and SET_CONFIG carry a window of.

vhost-user moves the bytes of the virtio device's configuration structure (virtio
1.2, "Device configuration layout" of each device) without saying what they mean; a
developer chasing "the guest sees the wrong disk size" wants ``capacity``, not hex.
One table per device type names the fields: the trace decoder reads them, the mock
back-end builds its config space with them.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from vhtrace.protocol.spec import DeviceType


class ConfigField(NamedTuple):
    name: str
    offset: int
    fmt: str
    """A struct format character (little-endian); ``6s``-like for byte strings."""
    in_summary: bool = False
    """Shown on the one-line view (the others: -V and JSON)."""


def _fields(*rows: tuple[Any, ...]) -> tuple[ConfigField, ...]:
    return tuple(ConfigField(*row) for row in rows)


# fmt: off
LAYOUTS: dict[DeviceType, tuple[ConfigField, ...]] = {
    # struct virtio_blk_config (virtio 1.2, 5.2.4)
    DeviceType.BLK: _fields(
        ("capacity", 0, "Q", True), ("size_max", 8, "I"), ("seg_max", 12, "I", True),
        ("cylinders", 16, "H"), ("heads", 18, "B"), ("sectors", 19, "B"),
        ("blk_size", 20, "I", True), ("physical_block_exp", 24, "B"),
        ("alignment_offset", 25, "B"), ("min_io_size", 26, "H"), ("opt_io_size", 28, "I"),
        ("writeback", 32, "B", True), ("num_queues", 34, "H", True),
        ("max_discard_sectors", 36, "I"), ("max_discard_seg", 40, "I"),
        ("discard_sector_alignment", 44, "I"), ("max_write_zeroes_sectors", 48, "I"),
        ("max_write_zeroes_seg", 52, "I"), ("write_zeroes_may_unmap", 56, "B"),
        ("max_secure_erase_sectors", 60, "I"), ("max_secure_erase_seg", 64, "I"),
        ("secure_erase_sector_alignment", 68, "I"), ("zone_sectors", 72, "I"),
        ("max_open_zones", 76, "I"), ("max_active_zones", 80, "I"),
        ("max_append_sectors", 84, "I"), ("write_granularity", 88, "I"), ("model", 92, "B"),
    ),
    # struct virtio_net_config (5.1.4)
    DeviceType.NET: _fields(
        ("mac", 0, "6s", True), ("status", 6, "H", True), ("max_virtqueue_pairs", 8, "H", True),
        ("mtu", 10, "H", True), ("speed", 12, "I"), ("duplex", 16, "B"),
        ("rss_max_key_size", 17, "B"), ("rss_max_indirection_table_length", 18, "H"),
        ("supported_hash_types", 20, "I"),
    ),
    # struct virtio_fs_config (5.11.4)
    DeviceType.FS: _fields(
        ("tag", 0, "36s", True), ("num_request_queues", 36, "I", True),
        ("notify_buf_size", 40, "I"),
    ),
    # struct virtio_scsi_config (5.6.4)
    DeviceType.SCSI: _fields(
        ("num_queues", 0, "I", True), ("seg_max", 4, "I"), ("max_sectors", 8, "I"),
        ("cmd_per_lun", 12, "I"), ("event_info_size", 16, "I"), ("sense_size", 20, "I"),
        ("cdb_size", 24, "I"), ("max_channel", 28, "H"), ("max_target", 30, "H", True),
        ("max_lun", 32, "I", True),
    ),
    # struct virtio_gpu_config (5.7.4)
    DeviceType.GPU: _fields(
        ("events_read", 0, "I", True), ("events_clear", 4, "I"), ("num_scanouts", 8, "I", True),
        ("num_capsets", 12, "I", True),
    ),
    # struct virtio_vsock_config (5.10.4)
    DeviceType.VSOCK: _fields(("guest_cid", 0, "Q", True)),
    # struct virtio_gpio_config (5.18.4)
    DeviceType.GPIO: _fields(("ngpio", 0, "H", True), ("gpio_names_size", 4, "I", True)),
    # struct virtio_snd_config (5.14.4); controls only with CTLS
    DeviceType.SOUND: _fields(
        ("jacks", 0, "I", True), ("streams", 4, "I", True), ("chmaps", 8, "I", True),
        ("controls", 12, "I"),
    ),
    # struct virtio_input_config (5.8.4): select/subsel choose what the union holds
    DeviceType.INPUT: _fields(
        ("select", 0, "B", True), ("subsel", 1, "B", True), ("size", 2, "B", True),
        ("u", 8, "128s"),
    ),
    # struct virtio_can_config (virtio-can draft)
    DeviceType.CAN: _fields(("status", 0, "H", True)),
    # struct virtio_crypto_config (5.9.4)
    DeviceType.CRYPTO: _fields(
        ("status", 0, "I", True), ("max_dataqueues", 4, "I", True),
        ("crypto_services", 8, "I", True), ("cipher_algo_l", 12, "I"), ("cipher_algo_h", 16, "I"),
        ("hash_algo", 20, "I"), ("mac_algo_l", 24, "I"), ("mac_algo_h", 28, "I"),
        ("aead_algo", 32, "I"), ("max_cipher_key_len", 36, "I"), ("max_auth_key_len", 40, "I"),
        ("akcipher_algo", 44, "I"), ("max_size", 48, "Q"),
    ),
    # rng, i2c and scmi have no device configuration (virtio 1.2 5.4.4, 5.16.4, 5.17.4)
}
# fmt: on

SECTOR = 512
"""virtio-blk's capacity counts 512-byte sectors, whatever blk_size says."""
SUMMARY_FIELDS = {
    device: frozenset(field.name for field in fields if field.in_summary)
    for device, fields in LAYOUTS.items()
}


def _size(field: ConfigField) -> int:
    return struct.calcsize("<" + field.fmt)


def offset_of(device: DeviceType, name: str) -> int:
    return next(field.offset for field in LAYOUTS[device] if field.name == name)


def decode(device: DeviceType, offset: int, window: bytes) -> dict[str, Any]:
    """The fields wholly inside ``window`` (config bytes from ``offset``), in the
    structure's order: a MAC address as ``52:54:00:12:34:56``, a virtio-fs tag as text."""
    fields: dict[str, Any] = {}
    end = offset + len(window)
    for field in LAYOUTS.get(device, ()):
        start = field.offset - offset
        if field.offset < offset or field.offset + _size(field) > end:
            continue
        (value,) = struct.unpack_from("<" + field.fmt, window, start)
        if field.name == "mac":
            value = ":".join(f"{byte:02x}" for byte in value)
        elif field.name == "tag":
            value = value.split(b"\0", 1)[0].decode("utf-8", "replace")
        fields[field.name] = value
    return fields


def encode(device: DeviceType, values: dict[str, Any], size: int | None = None) -> bytes:
    """Config bytes from offset 0: the given fields, zero elsewhere; ``size`` bytes long
    (default: up to the end of the last field given). The inverse of :func:`decode`."""
    known = {field.name: field for field in LAYOUTS[device]}
    unknown = set(values) - set(known)
    if unknown:
        raise KeyError(f"no such {device} config field: {', '.join(sorted(unknown))}")
    end = max((known[name].offset + _size(known[name]) for name in values), default=0)
    data = bytearray(end if size is None else size)
    for name, value in values.items():
        field = known[name]
        if name == "mac":
            value = bytes.fromhex(str(value).replace(":", ""))
        elif name == "tag":
            value = str(value).encode()
        struct.pack_into("<" + field.fmt, data, field.offset, value)
    return bytes(data)
