"""One codec per payload layout: bytes <-> named fields, both ways.

A codec decodes bytes into a plain dict of fields (ints, bools, strings, bytes
and lists of dicts) and encodes such a dict back into the exact same bytes:
padding and reserved fields are kept as fields, so that a decode/encode round
trip is byte-exact even for malformed input. Decoding never raises to callers
of :func:`decode`; a payload too short for its layout yields the error text
instead of fields, and the validator reports the size.

Layouts depend on a little context that only the conversation knows (packed
rings change the vring base encoding, XEN_MMAP grows memory regions, the device
type names feature bits): :class:`PayloadContext`.

All integers are little-endian: vhost-user uses the host's byte order and every
host vhtrace records on is little-endian (x86-64, arm64). The trace header
records the byte order so that a big-endian trace is refused, not misread.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

from vhtrace.protocol import device_config, spec
from vhtrace.protocol.spec import DeviceType

Fields = dict[str, Any]


class PayloadContext(NamedTuple):
    """What the conversation knows that changes how a payload reads (hashable, cheap)."""

    packed: bool = False
    """VIRTIO_F_RING_PACKED negotiated: vring bases use the packed encoding."""
    xen_mmap: bool = False
    """XEN_MMAP negotiated: memory regions carry xen_mmap_flags and domid."""
    device: DeviceType | None = None


DEFAULT_CONTEXT = PayloadContext()


class PayloadError(ValueError):
    """The bytes do not fit the layout (too short, or inconsistent counts)."""


def human_size(n: int) -> str:
    """1073741824 -> '1 GiB'; exact binary units only, else hex."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B" if n < 4096 else f"0x{n:x} B"


class Layout:
    """Base class: a named payload layout."""

    name: str = ""
    size: int | None = None
    """Exact size in bytes, or None when it depends on the content."""

    def expected_size(self, fields: Fields, ctx: PayloadContext) -> int | None:
        """Size the payload should have given its decoded fields (None: any)."""
        return self.size

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        raise NotImplementedError

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        raise NotImplementedError

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        """A few words for the one-line view."""
        return " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())

    def details(self, fields: Fields, ctx: PayloadContext) -> list[str]:
        """Every field, one per line, for the verbose view."""
        return [f"{k}: {_fmt(v)}" for k, v in fields.items()]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value) if 0 <= value < 4096 else f"0x{value:x}"
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 32 else value[:32].hex() + f"... ({len(value)} bytes)"
    return str(value)


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise PayloadError(f"{what} needs {n} bytes, got {len(data)}")


# --------------------------------------------------------------------------
# Fixed-size structs
# --------------------------------------------------------------------------


class StructLayout(Layout):
    """A C struct: a struct format and its field names."""

    fmt: str = ""
    field_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._struct = struct.Struct("<" + self.fmt)
        self.size = self._struct.size

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, self._struct.size, self.name)
        return dict(zip(self.field_names, self._struct.unpack_from(data), strict=True))

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        return self._struct.pack(*(fields.get(k, 0) for k in self.field_names))


class Empty(Layout):
    name = "empty"
    size = 0

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        return {}

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        return b""

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        return ""


class U64(StructLayout):
    name = "u64"
    fmt = "Q"
    field_names = ("value",)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        return str(fields["value"]) if fields["value"] < 1 << 32 else f"0x{fields['value']:x}"


class Ack(U64):
    """The u64 of a REPLY_ACK reply: 0 is success, anything else failure."""

    name = "ack"

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        value = fields["value"]
        return "ok" if value == 0 else f"failed ({_fmt(value)})"


class LogReply(Layout):
    """SET_LOG_BASE's reply: QEMU accepts any size, libvhost-user sends a u64."""

    name = "log_reply"

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        if not data:
            return {}
        _need(data, 8, self.name)
        return {"value": struct.unpack_from("<Q", data)[0]}

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        return struct.pack("<Q", fields["value"]) if "value" in fields else b""

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        return "" if not fields else Ack().summary(fields, ctx)


class VirtioFeatures(U64):
    name = "virtio_features"
    field_names = ("features",)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        value = fields["features"]
        return f"0x{value:x} " + "|".join(spec.virtio_feature_names(value, ctx.device))

    def details(self, fields: Fields, ctx: PayloadContext) -> list[str]:
        value = fields["features"]
        lines = [f"features: 0x{value:016x}"]
        lines += [
            f"  bit {bit:2}: {spec.virtio_feature_name(bit, ctx.device)}"
            for bit in spec.bits_of(value)
        ]
        return lines


class ProtocolFeatures(U64):
    name = "protocol_features"
    field_names = ("features",)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        value = fields["features"]
        return f"0x{value:x} " + "|".join(spec.protocol_feature_names(value))

    def details(self, fields: Fields, ctx: PayloadContext) -> list[str]:
        value = fields["features"]
        lines = [f"protocol_features: 0x{value:016x}"]
        lines += [
            f"  bit {bit:2}: {name}"
            for bit, name in zip(
                spec.bits_of(value), spec.protocol_feature_names(value), strict=True
            )
        ]
        return lines


class Status(U64):
    """SET/GET_STATUS: the virtio device status byte."""

    name = "status"
    field_names = ("status",)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        value = fields["status"]
        names = [spec.VIRTIO_STATUS_BITS.get(b, f"bit{b}") for b in spec.bits_of(value)]
        return f"0x{value:x} " + ("|".join(names) if names else "RESET")


class VringFd(Layout):
    """SET_VRING_KICK/CALL/ERR: u64 with the ring index and the NOFD bit."""

    name = "vring_fd"
    size = 8

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, 8, self.name)
        (value,) = struct.unpack_from("<Q", data)
        return {
            "index": value & spec.VRING_IDX_MASK,
            "nofd": bool(value & spec.VRING_NOFD_MASK),
            "reserved": value & ~(spec.VRING_IDX_MASK | spec.VRING_NOFD_MASK),
        }

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        value = fields["index"] | (spec.VRING_NOFD_MASK if fields.get("nofd") else 0)
        return struct.pack("<Q", value | fields.get("reserved", 0))

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        text = f"vring {fields['index']}" + (" nofd" if fields["nofd"] else "")
        if fields["reserved"]:
            text += f" reserved=0x{fields['reserved']:x}"
        return text


class RarpMac(Layout):
    """SEND_RARP: a u64 whose first six bytes are the guest's MAC address."""

    name = "rarp_mac"
    size = 8

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, 8, self.name)
        return {"mac": ":".join(f"{b:02x}" for b in data[:6]), "padding": data[6:8]}

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        mac = bytes(int(part, 16) for part in fields["mac"].split(":"))
        return mac + fields.get("padding", b"\0\0")

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        return f"mac {fields['mac']}"


class DeviceStateResult(Layout):
    """SET_DEVICE_STATE_FD reply: bits 0-7 error, bit 8 'no fd returned'."""

    name = "device_state_result"
    size = 8

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, 8, self.name)
        (value,) = struct.unpack_from("<Q", data)
        return {
            "error": value & 0xFF,
            "nofd": bool(value & 0x100),
            "reserved": value & ~0x1FF,
        }

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        value = fields["error"] | (0x100 if fields.get("nofd") else 0) | fields.get("reserved", 0)
        return struct.pack("<Q", value)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        text = "ok" if fields["error"] == 0 else f"error {fields['error']}"
        return text + (", no fd" if fields["nofd"] else ", back-end's fd")


class VringState(StructLayout):
    name = "vring_state"
    fmt = "II"
    field_names = ("index", "num")

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        return f"vring {fields['index']} num={fields['num']}"


class VringIndex(VringState):
    """GET_VRING_BASE request, VRING_KICK, back-end VRING_CALL/ERR: only the index counts."""

    name = "vring_index"

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        extra = f" num={fields['num']}" if fields["num"] else ""
        return f"vring {fields['index']}{extra}"


class VringEnable(VringState):
    name = "vring_enable"

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        num = fields["num"]
        state = {0: "disable", 1: "enable"}.get(num, f"num={num}")
        return f"vring {fields['index']} {state}"


class VringEndian(VringState):
    name = "vring_endian"

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        num = fields["num"]
        return f"vring {fields['index']} " + {0: "little-endian", 1: "big-endian"}.get(
            num, f"num={num}"
        )


class VringBase(VringState):
    """SET/GET_VRING_BASE: num encodes the ring position, split or packed."""

    name = "vring_base"

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        fields = super().decode(data, ctx)
        num = fields["num"]
        if ctx.packed:
            avail_idx, avail_wrap, used_idx, used_wrap = spec.packed_vring_base(num)
            fields.update(
                last_avail_idx=avail_idx,
                avail_wrap=int(avail_wrap),
                used_idx=used_idx,
                used_wrap=int(used_wrap),
            )
        else:
            fields.update(next_avail=num & 0xFFFF, reserved=num >> 16)
        return fields

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        num = fields.get("num")
        if num is None:
            if ctx.packed:
                num = spec.packed_vring_num(
                    fields["last_avail_idx"],
                    fields.get("avail_wrap", 0) & 1,
                    fields.get("used_idx", 0),
                    fields.get("used_wrap", 0) & 1,
                )
            else:
                num = fields["next_avail"] & 0xFFFF | fields.get("reserved", 0) << 16
        return self._struct.pack(fields["index"], num)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        if ctx.packed:
            return (
                f"vring {fields['index']} avail={fields['last_avail_idx']}"
                f"/w{fields['avail_wrap']} used={fields['used_idx']}/w{fields['used_wrap']}"
            )
        return f"vring {fields['index']} base={fields['num']}"


class VringAddr(StructLayout):
    name = "vring_addr"
    fmt = "IIQQQQ"
    field_names = (
        "index",
        "flags",
        "desc_user_addr",
        "used_user_addr",
        "avail_user_addr",
        "log_guest_addr",
    )

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        text = (
            f"vring {fields['index']} desc=0x{fields['desc_user_addr']:x} "
            f"avail=0x{fields['avail_user_addr']:x} used=0x{fields['used_user_addr']:x}"
        )
        if fields["flags"] & spec.VRING_F_LOG:
            text += f" log=0x{fields['log_guest_addr']:x}"
        return text


REGION_FIELDS = ("guest_phys_addr", "memory_size", "userspace_addr", "mmap_offset")
XEN_REGION_FIELDS = ("xen_mmap_flags", "domid")
_REGION = struct.Struct("<QQQQ")
_XEN = struct.Struct("<II")


def region_size(ctx: PayloadContext) -> int:
    """32 bytes, or 40 with XEN_MMAP's flags and domid."""
    return _REGION.size + (_XEN.size if ctx.xen_mmap else 0)


def _decode_region(data: bytes, offset: int, ctx: PayloadContext) -> Fields:
    region = dict(zip(REGION_FIELDS, _REGION.unpack_from(data, offset), strict=True))
    if ctx.xen_mmap:
        region.update(zip(XEN_REGION_FIELDS, _XEN.unpack_from(data, offset + 32), strict=True))
    return region


def _encode_region(region: Fields, ctx: PayloadContext) -> bytes:
    data = _REGION.pack(*(region.get(k, 0) for k in REGION_FIELDS))
    if ctx.xen_mmap:
        data += _XEN.pack(*(region.get(k, 0) for k in XEN_REGION_FIELDS))
    return data


def _region_text(region: Fields) -> str:
    return (
        f"gpa 0x{region['guest_phys_addr']:x} size {human_size(region['memory_size'])} "
        f"uaddr 0x{region['userspace_addr']:x} off 0x{region['mmap_offset']:x}"
    )


class MemTable(Layout):
    """SET_MEM_TABLE: u32 nregions, u32 padding, then the regions."""

    name = "mem_table"

    def expected_size(self, fields: Fields, ctx: PayloadContext) -> int | None:
        return 8 + region_size(ctx) * fields["nregions"]

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, 8, self.name)
        nregions, padding = struct.unpack_from("<II", data)
        step = region_size(ctx)
        present = (len(data) - 8) // step
        regions = [_decode_region(data, 8 + i * step, ctx) for i in range(min(nregions, present))]
        return {"nregions": nregions, "padding": padding, "regions": regions}

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        regions = fields["regions"]
        head = struct.pack("<II", fields.get("nregions", len(regions)), fields.get("padding", 0))
        return head + b"".join(_encode_region(r, ctx) for r in regions)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        regions = fields["regions"]
        text = f"{fields['nregions']} region{'s' if fields['nregions'] != 1 else ''}"
        if regions:
            text += ": " + ", ".join(
                f"0x{r['guest_phys_addr']:x}+{human_size(r['memory_size'])}" for r in regions
            )
        return text

    def details(self, fields: Fields, ctx: PayloadContext) -> list[str]:
        lines = [f"nregions: {fields['nregions']}"]
        if fields["padding"]:
            lines.append(f"padding: 0x{fields['padding']:x}")
        for i, region in enumerate(fields["regions"]):
            lines.append(f"region {i}: {_region_text(region)}")
            if ctx.xen_mmap:
                lines.append(
                    f"  xen_mmap_flags 0x{region['xen_mmap_flags']:x} domid {region['domid']}"
                )
        return lines


class MemRegion(Layout):
    """ADD_MEM_REG / REM_MEM_REG: u64 padding, then one region."""

    name = "mem_region"

    def expected_size(self, fields: Fields, ctx: PayloadContext) -> int | None:
        return 8 + region_size(ctx)

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, 8 + region_size(ctx), self.name)
        fields: Fields = {"padding": struct.unpack_from("<Q", data)[0]}
        fields.update(_decode_region(data, 8, ctx))
        return fields

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        return struct.pack("<Q", fields.get("padding", 0)) + _encode_region(fields, ctx)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        return _region_text(fields)


class Log(StructLayout):
    name = "log"
    fmt = "QQ"
    field_names = ("mmap_size", "mmap_offset")

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        return f"size {human_size(fields['mmap_size'])} off 0x{fields['mmap_offset']:x}"


IOTLB_TYPES = {
    1: "MISS",
    2: "UPDATE",
    3: "INVALIDATE",
    4: "ACCESS_FAIL",
    5: "BATCH_BEGIN",
    6: "BATCH_END",
}
IOTLB_PERMS = {0: "none", 1: "ro", 2: "wo", 3: "rw"}


class Iotlb(StructLayout):
    """struct vhost_iotlb_msg, 32 bytes with its tail padding."""

    name = "iotlb"
    fmt = "QQQBB6s"
    field_names = ("iova", "size", "uaddr", "perm", "type", "padding")

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        fields = {"padding": b"\0" * 6, **fields}
        return super().encode(fields, ctx)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        kind = IOTLB_TYPES.get(fields["type"], f"type{fields['type']}")
        perm = IOTLB_PERMS.get(fields["perm"], f"perm{fields['perm']}")
        return (
            f"{kind} iova 0x{fields['iova']:x} size {human_size(fields['size'])} "
            f"uaddr 0x{fields['uaddr']:x} {perm}"
        )


CONFIG_FLAGS = {0: "writable", 1: "migration"}


class Config(Layout):
    """GET/SET_CONFIG: u32 offset, u32 size, u32 flags, then size bytes."""

    name = "config"

    def expected_size(self, fields: Fields, ctx: PayloadContext) -> int | None:
        return 12 + fields["size"]

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, 12, self.name)
        offset, size, flags = struct.unpack_from("<III", data)
        fields = {"offset": offset, "size": size, "flags": flags, "region": bytes(data[12:])}
        # A window of zeros is GET_CONFIG's request (QEMU sends size zero bytes): naming
        # its fields would read "capacity 0". The bytes stay in ``region``.
        if ctx.device in device_config.LAYOUTS and any(fields["region"]):
            fields["device_config"] = device_config.decode(ctx.device, offset, data[12:])
        return fields

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        """Without a region, ``size`` zero bytes follow, as in QEMU's GET_CONFIG request;
        a given region is kept as it is, even if it disagrees with ``size``."""
        size = fields.get("size", len(fields.get("region", b"")))
        region = bytes(fields["region"]) if "region" in fields else bytes(size)
        return struct.pack("<III", fields.get("offset", 0), size, fields.get("flags", 0)) + region

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        flags = CONFIG_FLAGS.get(fields["flags"], f"flags={fields['flags']}")
        text = f"offset {fields['offset']} size {fields['size']} {flags}"
        if not any(fields["region"]):  # GET_CONFIG's request: a window of zeros
            return text
        named = fields.get("device_config")
        if named:
            return f"{text} {_config_summary(ctx.device, named)}"
        text += f" data {fields['region'][:16].hex()}"
        if len(fields["region"]) > 16:
            text += "..."
        return text

    def details(self, fields: Fields, ctx: PayloadContext) -> list[str]:
        lines = [f"{k}: {_fmt(fields[k])}" for k in ("offset", "size", "flags", "region")]
        named = fields.get("device_config")
        if named:
            lines.append(f"{ctx.device} config:")
            lines += [f"  {name}: {_fmt(value)}" for name, value in named.items()]
        return lines


def _config_summary(device: DeviceType | None, named: Fields) -> str:
    """The config fields that say what the device is (capacity, MAC, tag, ...); a window
    with none of those (a SET_CONFIG of one field) shows what it has."""
    shown = device_config.SUMMARY_FIELDS.get(device, frozenset()) & named.keys() or named
    parts = []
    for name, value in named.items():
        if name not in shown:
            continue
        if name == "capacity":
            parts.append(f"capacity {human_size(value * device_config.SECTOR)}")
        elif name == "tag":
            parts.append(f"tag {value!r}")
        else:
            parts.append(f"{name} {value}")
    return " ".join(parts)


class VringArea(Layout):
    """VRING_HOST_NOTIFIER_MSG: u64 index/NOFD, u64 size, u64 offset."""

    name = "vring_area"
    size = 24

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, 24, self.name)
        value, size, offset = struct.unpack_from("<QQQ", data)
        return {
            "index": value & spec.VRING_IDX_MASK,
            "nofd": bool(value & spec.VRING_NOFD_MASK),
            "reserved": value & ~(spec.VRING_IDX_MASK | spec.VRING_NOFD_MASK),
            "size": size,
            "offset": offset,
        }

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        value = fields["index"] | (spec.VRING_NOFD_MASK if fields.get("nofd") else 0)
        value |= fields.get("reserved", 0)
        return struct.pack("<QQQ", value, fields.get("size", 0), fields.get("offset", 0))

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        if fields["nofd"]:
            return f"vring {fields['index']} unregister"
        return (
            f"vring {fields['index']} size {human_size(fields['size'])} off 0x{fields['offset']:x}"
        )


class Inflight(StructLayout):
    """GET/SET_INFLIGHT_FD: 24 bytes on the wire including 4 bytes of tail padding."""

    name = "inflight"
    fmt = "QQHHI"
    field_names = ("mmap_size", "mmap_offset", "num_queues", "queue_size", "padding")

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        text = f"{fields['num_queues']} queues x {fields['queue_size']}"
        if fields["mmap_size"]:
            text += f", area {human_size(fields['mmap_size'])} off 0x{fields['mmap_offset']:x}"
        return text


class SharedUuid(Layout):
    """VhostUserShared: a UUID whose first three fields are big-endian."""

    name = "shared_uuid"
    size = 16

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, 16, self.name)
        return {"uuid": str(uuid.UUID(bytes=bytes(data[:16])))}

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        return uuid.UUID(fields["uuid"]).bytes

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        return f"uuid {fields['uuid']}"


DEVICE_STATE_DIRECTIONS = {0: "save", 1: "load"}
DEVICE_STATE_PHASES = {0: "stopped"}


class DeviceStateParams(StructLayout):
    name = "device_state"
    fmt = "II"
    field_names = ("direction", "phase")

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        direction = DEVICE_STATE_DIRECTIONS.get(fields["direction"], f"dir{fields['direction']}")
        phase = DEVICE_STATE_PHASES.get(fields["phase"], f"phase{fields['phase']}")
        return f"{direction}, {phase}"


SHMEM_MAP_FLAGS = {1: "RW"}
"""VHOST_USER_FLAG_MAP_RW (1u<<0), the one flag the spec defines: set, the back-end maps
read-write; clear, read-only (QEMU docs/interop/vhost-user.rst, "VhostUserMMap", and
rust-vmm vhost message.rs ``VhostUserMMapFlags::WRITABLE``, which rejects other bits)."""


class ShmemMap(StructLayout):
    """VhostUserMMap: SHMEM_MAP / SHMEM_UNMAP on the back-end channel."""

    name = "shmem_map"
    fmt = "B7sQQQQ"
    field_names = ("shmid", "padding", "fd_offset", "shm_offset", "len", "flags")

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        return super().encode({"padding": b"\0" * 7, **fields}, ctx)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        flags = "rw" if fields["flags"] & 1 else "ro"
        if fields["flags"] & ~1:
            flags += f" +0x{fields['flags'] & ~1:x}"
        return (
            f"shm {fields['shmid']} off 0x{fields['shm_offset']:x} len {human_size(fields['len'])}"
            f" fd_off 0x{fields['fd_offset']:x} {flags}"
        )


class ShmemConfig(Layout):
    """VhostUserShMemConfig: u32 nregions, u32 padding, u64 memory_sizes[256]."""

    name = "shmem_config"
    size = 8 + 8 * spec.SHMEM_MAX_REGIONS

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        _need(data, 8, self.name)
        nregions, padding = struct.unpack_from("<II", data)
        count = min((len(data) - 8) // 8, spec.SHMEM_MAX_REGIONS)
        sizes = list(struct.unpack_from(f"<{count}Q", data, 8))
        return {"nregions": nregions, "padding": padding, "memory_sizes": sizes}

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        sizes = list(fields.get("memory_sizes", []))
        sizes += [0] * (spec.SHMEM_MAX_REGIONS - len(sizes))
        head = struct.pack("<II", fields.get("nregions", 0), fields.get("padding", 0))
        return head + struct.pack(f"<{len(sizes)}Q", *sizes)

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        used = [(i, s) for i, s in enumerate(fields["memory_sizes"]) if s]
        return f"{fields['nregions']} regions" + "".join(
            f", shm {i}: {human_size(s)}" for i, s in used[:4]
        )


# --------------------------------------------------------------------------
# Crypto session: two known QEMU layouts, anything else kept raw
# --------------------------------------------------------------------------

CRYPTO_SYM_MAX_KEY = 64
CRYPTO_SYM_MAX_AUTH_KEY = 512
CRYPTO_ASYM_MAX_KEY = 1024
_SYM_INFO = struct.Struct("<IIIIIIBBBB4sQQ")  # 48 bytes, two raw pointers at the end
_SYM_INFO_FIELDS = (
    "cipher_alg",
    "key_len",
    "hash_alg",
    "hash_result_len",
    "auth_key_len",
    "add_len",
    "op_type",
    "direction",
    "hash_mode",
    "alg_chain_order",
    "cipher_key_ptr",
    "auth_key_ptr",
)
_NEW_SYM_INFO_FIELDS = (*_SYM_INFO_FIELDS[:10], "info_padding", *_SYM_INFO_FIELDS[10:])
"""The current layout's sym info has 4 bytes of padding before the pointers: kept, so that
a decode/encode round trip is byte-exact whatever the sender left there."""
_OLD_SYM_INFO = struct.Struct("<IIIIIIIBBBBQQ")  # op_code first, 48 bytes
_ASYM_INFO = struct.Struct("<III4sQII")  # algo, keytype, keylen, padding, key ptr, union (8)
_ASYM_INFO_FIELDS = ("algo", "keytype", "keylen", "info_padding", "key_ptr", "param0", "param1")
_INFO_PADDING = {"info_padding": bytes(4)}
CRYPTO_OP_CODES = {0: "sym", 1: "asym"}


class CryptoSession(Layout):
    """CREATE_CRYPTO_SESSION, decoded defensively.

    The layout is not in the spec and changed when QEMU added asymmetric
    sessions: the current one (1072 bytes) starts with a u64 op_code, then a
    union of sym (info + key[64] + auth_key[512]) and asym (info + key[1024]),
    then i64 session_id; the older one (632 bytes) starts with session_id
    and has op_code inside the sym info. Other sizes are kept raw.
    """

    name = "crypto_session"
    NEW_SIZE = 8 + 1056 + 8
    OLD_SIZE = 8 + 48 + CRYPTO_SYM_MAX_KEY + CRYPTO_SYM_MAX_AUTH_KEY

    def expected_size(self, fields: Fields, ctx: PayloadContext) -> int | None:
        return None

    def decode(self, data: bytes, ctx: PayloadContext) -> Fields:
        if len(data) == self.NEW_SIZE:
            return self._decode_new(bytes(data))
        if len(data) == self.OLD_SIZE:
            return self._decode_old(bytes(data))
        return {"layout": "unknown", "raw": bytes(data)}

    def _decode_new(self, data: bytes) -> Fields:
        (op_code,) = struct.unpack_from("<Q", data)
        (session_id,) = struct.unpack_from("<q", data, self.NEW_SIZE - 8)
        union = data[8 : self.NEW_SIZE - 8]
        fields: Fields = {"layout": "qemu", "op_code": op_code, "session_id": session_id}
        if op_code == 1:
            fields.update(zip(_ASYM_INFO_FIELDS, _ASYM_INFO.unpack_from(union), strict=True))
            fields["key"] = union[_ASYM_INFO.size : _ASYM_INFO.size + CRYPTO_ASYM_MAX_KEY]
        else:
            fields.update(zip(_NEW_SYM_INFO_FIELDS, _SYM_INFO.unpack_from(union), strict=True))
            start = _SYM_INFO.size
            fields["key"] = union[start : start + CRYPTO_SYM_MAX_KEY]
            start += CRYPTO_SYM_MAX_KEY
            fields["auth_key"] = union[start : start + CRYPTO_SYM_MAX_AUTH_KEY]
        fields["union_tail"] = union[self._union_used(op_code) :]
        return fields

    @staticmethod
    def _union_used(op_code: int) -> int:
        if op_code == 1:
            return _ASYM_INFO.size + CRYPTO_ASYM_MAX_KEY
        return _SYM_INFO.size + CRYPTO_SYM_MAX_KEY + CRYPTO_SYM_MAX_AUTH_KEY

    def _decode_old(self, data: bytes) -> Fields:
        (session_id,) = struct.unpack_from("<q", data)
        info = _OLD_SYM_INFO.unpack_from(data, 8)
        fields: Fields = {"layout": "qemu-old", "session_id": session_id, "op_code": info[0]}
        fields.update(zip(_SYM_INFO_FIELDS, info[1:], strict=True))
        start = 8 + _OLD_SYM_INFO.size
        fields["key"] = data[start : start + CRYPTO_SYM_MAX_KEY]
        fields["auth_key"] = data[start + CRYPTO_SYM_MAX_KEY :]
        return fields

    def encode(self, fields: Fields, ctx: PayloadContext) -> bytes:
        layout = fields.get("layout", "qemu")
        if layout == "unknown":
            return bytes(fields["raw"])
        if layout == "qemu-old":
            info = _OLD_SYM_INFO.pack(
                fields.get("op_code", 0), *(fields.get(k, 0) for k in _SYM_INFO_FIELDS)
            )
            key = bytes(fields.get("key", b"")).ljust(CRYPTO_SYM_MAX_KEY, b"\0")
            auth = bytes(fields.get("auth_key", b"")).ljust(CRYPTO_SYM_MAX_AUTH_KEY, b"\0")
            return struct.pack("<q", fields.get("session_id", 0)) + info + key + auth
        op_code = fields.get("op_code", 0)
        info = {**_INFO_PADDING, **fields}
        if op_code == 1:
            union = _ASYM_INFO.pack(*(info.get(k, 0) for k in _ASYM_INFO_FIELDS))
            union += bytes(fields.get("key", b"")).ljust(CRYPTO_ASYM_MAX_KEY, b"\0")
        else:
            union = _SYM_INFO.pack(*(info.get(k, 0) for k in _NEW_SYM_INFO_FIELDS))
            union += bytes(fields.get("key", b"")).ljust(CRYPTO_SYM_MAX_KEY, b"\0")
            union += bytes(fields.get("auth_key", b"")).ljust(CRYPTO_SYM_MAX_AUTH_KEY, b"\0")
        union += bytes(fields.get("union_tail", b""))
        union = union.ljust(self.NEW_SIZE - 16, b"\0")
        return struct.pack("<Q", op_code) + union + struct.pack("<q", fields.get("session_id", 0))

    def summary(self, fields: Fields, ctx: PayloadContext) -> str:
        if fields["layout"] == "unknown":
            return f"unknown layout, {len(fields['raw'])} bytes"
        if "keylen" in fields:  # decoded as asymmetric (current layout, op_code 1)
            text = f"asym algo {fields['algo']} keylen {fields['keylen']}"
        else:
            # In the old layout op_code is the symmetric operation, not sym/asym.
            op_code = fields["op_code"]
            kind = CRYPTO_OP_CODES.get(op_code, f"op{op_code}")
            if fields["layout"] == "qemu-old":
                kind = f"sym op {op_code}"
            text = (
                f"{kind} cipher {fields['cipher_alg']} key_len {fields['key_len']} "
                f"hash {fields['hash_alg']} auth_key_len {fields['auth_key_len']}"
            )
        return text + f" session {fields['session_id']}"


# --------------------------------------------------------------------------
# Registry and the never-raising entry points
# --------------------------------------------------------------------------

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Empty(),
        U64(),
        Ack(),
        LogReply(),
        VirtioFeatures(),
        ProtocolFeatures(),
        Status(),
        VringFd(),
        RarpMac(),
        DeviceStateResult(),
        VringState(),
        VringIndex(),
        VringEnable(),
        VringEndian(),
        VringBase(),
        VringAddr(),
        MemTable(),
        MemRegion(),
        Log(),
        Iotlb(),
        Config(),
        VringArea(),
        Inflight(),
        SharedUuid(),
        DeviceStateParams(),
        ShmemMap(),
        ShmemConfig(),
        CryptoSession(),
    )
}


@dataclass(frozen=True, slots=True)
class Decoded:
    """The result of decoding a payload: fields, or why they could not be read."""

    layout: str
    fields: Fields | None
    error: str | None = None

    def summary(self, ctx: PayloadContext = DEFAULT_CONTEXT) -> str:
        if self.fields is None:
            return f"<{self.error}>"
        return LAYOUTS[self.layout].summary(self.fields, ctx)

    def details(self, ctx: PayloadContext = DEFAULT_CONTEXT) -> list[str]:
        if self.fields is None:
            return [f"undecodable: {self.error}"]
        return LAYOUTS[self.layout].details(self.fields, ctx)


def decode(layout: str, data: bytes, ctx: PayloadContext = DEFAULT_CONTEXT) -> Decoded:
    """Decode a payload by layout name. Never raises: errors come back in the result."""
    codec = LAYOUTS[layout]
    try:
        return Decoded(layout, codec.decode(data, ctx))
    except (PayloadError, struct.error, ValueError) as exc:
        return Decoded(layout, None, str(exc))


def encode(layout: str, fields: Fields, ctx: PayloadContext = DEFAULT_CONTEXT) -> bytes:
    """Encode fields into payload bytes (raises KeyError/struct.error on bad fields)."""
    return LAYOUTS[layout].encode(fields, ctx)


def expected_size(layout: str, fields: Fields | None, ctx: PayloadContext) -> int | None:
    """The size a payload with these fields should have, or None if any size goes."""
    codec = LAYOUTS[layout]
    if fields is None:
        return codec.size
    return codec.expected_size(fields, ctx)
