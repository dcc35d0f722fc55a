"""The Wireshark Lua dissector, with its protocol tables generated from the spec.

``vhost-user.lua`` ships as package data, complete and usable as is. The block
between its GENERATED markers is written by this module from
:mod:`vhtrace.protocol` (request ids and names of both channels with their
layouts, header flags, feature and enum names, the byte layout of the fixed
structs) together with the ``ProtoField`` declarations of :data:`FIELDS`;
everything else in the file is hand-written Lua that reads those tables.

* ``python -m vhtrace.dissect.lua`` rewrites the block in the source tree;
* a test fails when the shipped file is not what this module would write;
* :func:`lua_source` (``vhtrace export --lua``) regenerates the block on the
  way out, so what it prints always matches the running vhtrace.
"""

from __future__ import annotations

import re
import struct
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vhtrace.protocol import device_config, payloads, spec
from vhtrace.protocol.spec import Channel

LUA_FILE = "vhost-user.lua"
BEGIN = "-- BEGIN GENERATED"
END = "-- END GENERATED"
FIELD_PREFIX = "vhost_user."


@dataclass(frozen=True)
class LuaField:
    """One filterable field: ``vhost_user.<key>``."""

    key: str
    label: str
    kind: str
    """uint8/16/32/64, int64, bool, bytes, string, ether, guid or framenum."""
    base: str = "DEC"
    values: str | None = None
    """Name of a value table of the generated block (VALUES.<name>)."""
    mask: int | None = None
    bits: int = 0
    """For a bool: the width of the integer its mask applies to."""
    abbrev: str | None = None
    """The filter name when it is not ``vhost_user.<key>``: a field that shares another's
    name with other value names (a device's feature bits, named by the device)."""

    @property
    def filter_name(self) -> str:
        return self.abbrev or FIELD_PREFIX + self.key

    @property
    def width(self) -> int | None:
        """Bytes of an integer field (None for the others)."""
        match = re.fullmatch(r"u?int(\d+)", self.kind)
        return int(match.group(1)) // 8 if match else None


def _u(
    key: str,
    label: str,
    bits: int,
    base: str = "DEC",
    *,
    values: str | None = None,
    mask: int | None = None,
) -> LuaField:
    return LuaField(key, label, f"uint{bits}", base, values=values, mask=mask)


def _x64(key: str, label: str) -> LuaField:
    return LuaField(key, label, "uint64", "HEX")


def _bool(key: str, label: str, bits: int, mask: int) -> LuaField:
    return LuaField(key, label, "bool", "NONE", mask=mask, bits=bits)


FIELDS: tuple[LuaField, ...] = (
    # The header.
    _u("request", "Request", 32),
    LuaField("request_name", "Request name", "string", "NONE"),
    _u("flags", "Flags", 32, "HEX"),
    _u("flags.version", "Version", 32, mask=spec.VERSION_MASK),
    _bool("flags.reply", "Reply", 32, spec.FLAG_REPLY),
    _bool("flags.need_reply", "Need reply", 32, spec.FLAG_NEED_REPLY),
    _u("flags.reserved", "Reserved flags", 32, "HEX", mask=spec.RESERVED_FLAGS_MASK),
    _u("size", "Size", 32),
    # What the trace knows (from the packet comments).
    _u("session", "Session", 32),
    _u("seq", "Message number", 64),
    LuaField("channel", "Channel", "string", "NONE"),
    LuaField("sender", "Sender", "string", "NONE"),
    LuaField("role", "Role", "string", "NONE"),
    LuaField("layout", "Payload layout", "string", "NONE"),
    _u("answers", "Answers message", 64),
    LuaField("request_in", "Request in", "framenum", "NONE"),
    LuaField("reply_in", "Reply in", "framenum", "NONE"),
    LuaField("fd", "File descriptor", "string", "NONE"),
    LuaField("finding", "Finding", "string", "NONE"),
    # Bytes no layout explains.
    LuaField("payload", "Payload", "bytes", "NONE"),
    LuaField("trailing", "Bytes beyond the layout", "bytes", "NONE"),
    LuaField("after_size", "Bytes after the message size", "bytes", "NONE"),
    LuaField("padding", "Padding", "bytes", "NONE"),
    # Plain values.
    _u("u64", "Value", 64),
    _u("ack", "Ack (0 = success)", 64),
    _x64("features", "Virtio features"),
    _u("features.bit", "Feature bit", 8, values="VIRTIO_FEATURES"),
    LuaField("features.name", "Feature name", "string", "NONE"),
    _x64("protocol_features", "Protocol features"),
    _u("protocol_features.bit", "Protocol feature bit", 8, values="PROTOCOL_FEATURES"),
    _x64("status", "Device status"),
    _u("status.bit", "Status bit", 8, values="STATUS_BITS"),
    LuaField("mac", "MAC address", "ether", "NONE"),
    LuaField("uuid", "Shared object UUID", "guid", "NONE"),
    # Rings.
    _u("vring.index", "Ring index", 32),
    _u("vring.num", "Num", 32),
    _bool("vring.nofd", "No fd", 8, spec.VRING_NOFD_MASK >> 8),
    _x64("vring.reserved", "Reserved bits"),
    _u("vring.next_avail", "Next avail index", 16),
    _u("vring.last_avail_idx", "Last avail index", 16, mask=0x7FFF),
    _bool("vring.avail_wrap", "Avail wrap counter", 16, 0x8000),
    _u("vring.used_idx", "Used index", 16, mask=0x7FFF),
    _bool("vring.used_wrap", "Used wrap counter", 16, 0x8000),
    _u("vring.flags", "Address flags", 32, "HEX"),
    _bool("vring.flags.log", "Log used-ring writes", 32, spec.VRING_F_LOG),
    _x64("vring.desc", "Descriptor table"),
    _x64("vring.used", "Used ring"),
    _x64("vring.avail", "Available ring"),
    _x64("vring.log", "Log address"),
    _x64("area.size", "Area size"),
    _x64("area.offset", "Area offset"),
    # Memory.
    _u("mem.nregions", "Regions", 32),
    _x64("mem.gpa", "Guest physical address"),
    _x64("mem.size", "Size"),
    _x64("mem.uaddr", "User address"),
    _x64("mem.mmap_offset", "Mmap offset"),
    _u("mem.xen_mmap_flags", "Xen mmap flags", 32, "HEX"),
    _u("mem.domid", "Xen domain", 32),
    _x64("log.mmap_size", "Log size"),
    _x64("log.mmap_offset", "Log offset"),
    _x64("iotlb.iova", "IOVA"),
    _x64("iotlb.size", "Size"),
    _x64("iotlb.uaddr", "User address"),
    _u("iotlb.perm", "Permission", 8, values="IOTLB_PERMS"),
    _u("iotlb.type", "Type", 8, values="IOTLB_TYPES"),
    # Config, inflight, device state, shared memory.
    _u("config.offset", "Offset", 32),
    _u("config.size", "Size", 32),
    _u("config.flags", "Flags", 32, values="CONFIG_FLAGS"),
    LuaField("config.region", "Config space", "bytes", "NONE"),
    _x64("inflight.mmap_size", "Area size"),
    _x64("inflight.mmap_offset", "Area offset"),
    _u("inflight.num_queues", "Queues", 16),
    _u("inflight.queue_size", "Queue size", 16),
    _u("device_state.direction", "Direction", 32, values="DEVICE_STATE_DIRECTIONS"),
    _u("device_state.phase", "Phase", 32, values="DEVICE_STATE_PHASES"),
    _u("device_state.error", "Error", 8),
    _bool("device_state.nofd", "No fd returned", 8, 0x1),
    _u("shmem.shmid", "Shared memory id", 8),
    _x64("shmem.fd_offset", "Fd offset"),
    _x64("shmem.shm_offset", "Shared memory offset"),
    _x64("shmem.len", "Length"),
    _x64("shmem.flags", "Map flags"),
    _u("shmem.nregions", "Regions", 32),
    _x64("shmem.memory_size", "Region size"),
    # Crypto sessions.
    _u("crypto.op_code", "Operation", 64, values="CRYPTO_OP_CODES"),
    _u("crypto.op_code32", "Operation", 32, values="CRYPTO_OP_CODES"),
    LuaField("crypto.session_id", "Session id", "int64"),
    *(
        _u(f"crypto.{name}", name.replace("_", " ").capitalize(), 32)
        for name in ("cipher_alg", "key_len", "hash_alg", "hash_result_len", "auth_key_len")
    ),
    _u("crypto.add_len", "Additional data length", 32),
    *(
        _u(f"crypto.{name}", name.replace("_", " ").capitalize(), 8)
        for name in ("op_type", "direction", "hash_mode", "alg_chain_order")
    ),
    _x64("crypto.key_ptr", "Key pointer (meaningless on the wire)"),
    _x64("crypto.auth_key_ptr", "Auth key pointer (meaningless on the wire)"),
    LuaField("crypto.key", "Key", "bytes", "NONE"),
    LuaField("crypto.auth_key", "Auth key", "bytes", "NONE"),
    LuaField("crypto.union_tail", "Rest of the session union", "bytes", "NONE"),
    *(_u(f"crypto.{name}", name.capitalize(), 32) for name in ("algo", "keytype", "keylen")),
    _u("crypto.param0", "Algorithm parameter 0", 32),
    _u("crypto.param1", "Algorithm parameter 1", 32),
    LuaField("crypto.data", "Session (unknown layout)", "bytes", "NONE"),
)


def _config_field(device: spec.DeviceType, field: device_config.ConfigField) -> LuaField:
    """``config.<device>.<name>``: a config-space field of GET/SET_CONFIG, by device."""
    key, label = f"config.{device.value}.{field.name}", field.name.replace("_", " ").capitalize()
    if field.name == "mac":
        return LuaField(key, label, "ether", "NONE")
    if field.fmt.endswith("s"):
        return LuaField(key, label, "string", "NONE")
    return _u(key, label, 8 * struct.calcsize(field.fmt))


CONFIG_FIELDS: tuple[LuaField, ...] = tuple(
    _config_field(device, field)
    for device, fields in device_config.LAYOUTS.items()
    for field in fields
)
FIELDS += CONFIG_FIELDS


def device_features_values(device: spec.DeviceType) -> str:
    """The name of the value table of a device's feature bits (common and its own); the
    Lua builds it the same way from the device named in a packet's metadata."""
    return f"VIRTIO_FEATURES_{device.value.upper()}"


DEVICE_FEATURE_FIELDS: tuple[LuaField, ...] = tuple(
    LuaField(
        f"features.bit.{device.value}",
        "Feature bit",
        "uint8",
        values=device_features_values(device),
        abbrev=FIELD_PREFIX + "features.bit",
    )
    for device in spec.DeviceType
)
"""``vhost_user.features.bit`` again, once per device type, with that device's names: a
bit is added with the field of the trace's device, so Wireshark shows ``RO (5)`` for a blk
device where the common field says ``Unknown (5)``. (A display filter reads a string value
by the first field of a name only, so ``vhost_user.features.name == "RO"`` is the filter by
name; ``vhost_user.features.bit == 5`` matches every one.)"""
FIELDS += DEVICE_FEATURE_FIELDS
_FIELDS_BY_KEY = {f.key: f for f in FIELDS}

# --------------------------------------------------------------------------
# Struct layouts: codec field -> Lua field
# --------------------------------------------------------------------------

_VRING_STATE = {"index": "vring.index", "num": "vring.num"}
REGION_KEYS = {
    "guest_phys_addr": "mem.gpa",
    "memory_size": "mem.size",
    "userspace_addr": "mem.uaddr",
    "mmap_offset": "mem.mmap_offset",
    "xen_mmap_flags": "mem.xen_mmap_flags",
    "domid": "mem.domid",
}
STRUCT_KEYS: dict[str, dict[str, str]] = {
    "u64": {"value": "u64"},
    "ack": {"value": "ack"},
    "virtio_features": {"features": "features"},
    "protocol_features": {"features": "protocol_features"},
    "status": {"status": "status"},
    "vring_state": _VRING_STATE,
    "vring_index": _VRING_STATE,
    "vring_enable": _VRING_STATE,
    "vring_endian": _VRING_STATE,
    "vring_base": _VRING_STATE,
    "vring_addr": {
        "index": "vring.index",
        "flags": "vring.flags",
        "desc_user_addr": "vring.desc",
        "used_user_addr": "vring.used",
        "avail_user_addr": "vring.avail",
        "log_guest_addr": "vring.log",
    },
    "log": {"mmap_size": "log.mmap_size", "mmap_offset": "log.mmap_offset"},
    "iotlb": {
        "iova": "iotlb.iova",
        "size": "iotlb.size",
        "uaddr": "iotlb.uaddr",
        "perm": "iotlb.perm",
        "type": "iotlb.type",
        "padding": "padding",
    },
    "inflight": {
        "mmap_size": "inflight.mmap_size",
        "mmap_offset": "inflight.mmap_offset",
        "num_queues": "inflight.num_queues",
        "queue_size": "inflight.queue_size",
        "padding": "padding",
    },
    "device_state": {"direction": "device_state.direction", "phase": "device_state.phase"},
    "shmem_map": {
        "shmid": "shmem.shmid",
        "padding": "padding",
        "fd_offset": "shmem.fd_offset",
        "shm_offset": "shmem.shm_offset",
        "len": "shmem.len",
        "flags": "shmem.flags",
    },
}
"""The Lua field of each codec field of each fixed struct layout."""

_FMT_TOKEN = re.compile(r"(\d*)([a-zA-Z?])")

Entry = tuple[str, int]


def _checked(layout: str, key: str, size: int) -> Entry:
    field = _FIELDS_BY_KEY[key]
    if field.width is not None and field.width != size:
        raise ValueError(f"{layout}: {key} is {field.width} bytes in Lua, {size} on the wire")
    return key, size


def struct_entries(layout: str) -> list[Entry]:
    """(Lua field, size) in wire order for a fixed struct of the codec."""
    codec = payloads.LAYOUTS[layout]
    assert isinstance(codec, payloads.StructLayout)
    keys = STRUCT_KEYS[layout]
    names = iter(codec.field_names)
    entries = []
    for count, code in _FMT_TOKEN.findall(codec.fmt):
        sizes = [int(count)] if code == "s" else [struct.calcsize("<" + code)] * int(count or 1)
        for size in sizes:
            name = next(names)
            entries.append(_checked(layout, keys[name], size))
    if sum(size for _, size in entries) != codec.size:
        raise ValueError(f"{layout}: entries do not add up to {codec.size} bytes")
    return entries


def region_entries(xen: bool) -> list[Entry]:
    """A memory region: four u64, then XEN_MMAP's two u32."""
    entries = [_checked("region", REGION_KEYS[n], 8) for n in payloads.REGION_FIELDS]
    if xen:
        entries += [_checked("region", REGION_KEYS[n], 4) for n in payloads.XEN_REGION_FIELDS]
    size = payloads.region_size(payloads.PayloadContext(xen_mmap=xen))
    if sum(s for _, s in entries) != size:
        raise ValueError(f"region entries do not add up to {size} bytes")
    return entries


def crypto_entries() -> dict[str, list[Entry]]:
    """QEMU's crypto session layouts (see payloads.CryptoSession), field by field."""
    sym_info = [
        *(("crypto." + n, 4) for n in ("cipher_alg", "key_len", "hash_alg")),
        *(("crypto." + n, 4) for n in ("hash_result_len", "auth_key_len", "add_len")),
        *(("crypto." + n, 1) for n in ("op_type", "direction", "hash_mode", "alg_chain_order")),
    ]
    keys = [
        ("crypto.key", payloads.CRYPTO_SYM_MAX_KEY),
        ("crypto.auth_key", payloads.CRYPTO_SYM_MAX_AUTH_KEY),
    ]
    ptrs = [("crypto.key_ptr", 8), ("crypto.auth_key_ptr", 8)]
    new_size, old_size = payloads.CryptoSession.NEW_SIZE, payloads.CryptoSession.OLD_SIZE
    sym = [("crypto.op_code", 8), *sym_info, ("padding", 4), *ptrs, *keys]
    sym.append(("crypto.union_tail", new_size - 8 - sum(s for _, s in sym)))
    asym = [("crypto.op_code", 8)]
    asym += [("crypto." + n, 4) for n in ("algo", "keytype", "keylen")]
    asym += [("padding", 4), ("crypto.key_ptr", 8), ("crypto.param0", 4), ("crypto.param1", 4)]
    asym.append(("crypto.key", payloads.CRYPTO_ASYM_MAX_KEY))
    old = [("crypto.session_id", 8), ("crypto.op_code32", 4), *sym_info, *ptrs, *keys]
    layouts = {
        "crypto_sym": [*sym, ("crypto.session_id", 8)],
        "crypto_asym": [*asym, ("crypto.session_id", 8)],
        "crypto_old": old,
    }
    for name, size in (
        ("crypto_sym", new_size),
        ("crypto_asym", new_size),
        ("crypto_old", old_size),
    ):
        entries = layouts[name]
        if sum(s for _, s in entries) != size:
            raise ValueError(f"{name}: {sum(s for _, s in entries)} bytes, expected {size}")
        layouts[name] = [_checked(name, k, s) for k, s in entries]
    return layouts


def all_structs() -> dict[str, list[Entry]]:
    structs = {layout: struct_entries(layout) for layout in STRUCT_KEYS}
    structs["region"] = region_entries(xen=False)
    structs["region_xen"] = region_entries(xen=True)
    structs.update(crypto_entries())
    return structs


# --------------------------------------------------------------------------
# Rendering the generated block
# --------------------------------------------------------------------------


def _str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _table(mapping: dict[int, str]) -> str:
    return "{ " + ", ".join(f"[{k}] = {_str(v)}" for k, v in sorted(mapping.items())) + " }"


def _requests(channel: Channel) -> list[str]:
    lines = [f"  {channel.value} = {{"]
    for row in spec.REQUESTS[channel].values():
        items = [f"name = {_str(row.name)}", f"payload = {_str(row.payload)}"]
        items.append(f"reply = {_str(row.reply_payload)}")
        if row.postcopy_payload:
            items.append(f"postcopy = {_str(row.postcopy_payload)}")
        lines.append(f"    [{row.id}] = {{ {', '.join(items)} }},")
    lines.append("  },")
    return lines


def _field_line(field: LuaField) -> str:
    abbr, label = _str(field.filter_name), _str(field.label)
    if field.kind == "bool":
        args = f"{abbr}, {label}, {field.bits}, nil, 0x{field.mask:x}"
    elif field.kind == "framenum":
        frametype = "REQUEST" if field.key == "request_in" else "RESPONSE"
        args = f"{abbr}, {label}, base.NONE, frametype.{frametype}"
    elif field.kind in ("bytes", "string", "ether", "guid"):
        args = f"{abbr}, {label}"
    else:
        values = f"VALUES.{field.values}" if field.values else "nil"
        mask = f", 0x{field.mask:x}" if field.mask is not None else ""
        args = f"{abbr}, {label}, base.{field.base}, {values}{mask}"
    return f"F[{_str(field.key)}] = ProtoField.{field.kind}({args})"


def _values() -> dict[str, dict[int, str]]:
    per_device = {
        device_features_values(device): {
            bit: spec.virtio_feature_name(bit, device)
            for bit in sorted(
                {*spec.COMMON_VIRTIO_FEATURES, *spec.DEVICE_VIRTIO_FEATURES.get(device, {})}
            )
        }
        for device in spec.DeviceType
    }
    return {
        "VIRTIO_FEATURES": spec.COMMON_VIRTIO_FEATURES,
        **per_device,
        "PROTOCOL_FEATURES": {f.value: f.name for f in spec.ProtocolFeature},
        "STATUS_BITS": spec.VIRTIO_STATUS_BITS,
        "IOTLB_TYPES": payloads.IOTLB_TYPES,
        "IOTLB_PERMS": payloads.IOTLB_PERMS,
        "CONFIG_FLAGS": payloads.CONFIG_FLAGS,
        "DEVICE_STATE_DIRECTIONS": payloads.DEVICE_STATE_DIRECTIONS,
        "DEVICE_STATE_PHASES": payloads.DEVICE_STATE_PHASES,
        "CRYPTO_OP_CODES": payloads.CRYPTO_OP_CODES,
    }


def generated_block() -> str:
    """The Lua between the markers, from the protocol model."""
    if (spec.VRING_IDX_MASK, spec.VRING_NOFD_MASK) != (0xFF, 0x100):
        raise ValueError("the Lua reads the ring index as byte 0 and NOFD as bit 0 of byte 1")
    out = [
        BEGIN + ": written by `python -m vhtrace.dissect.lua` from vhtrace.protocol; do not edit.",
        f"local HEADER_SIZE = {spec.HEADER_SIZE}",
        f"local VRING_MASKS = {{ INDEX = 0x{spec.VRING_IDX_MASK:x},"
        f" NOFD = 0x{spec.VRING_NOFD_MASK:x} }}",
        f"local FLAGS = {{ VERSION_MASK = 0x{spec.VERSION_MASK:x}, REPLY = 0x{spec.FLAG_REPLY:x},"
        f" NEED_REPLY = 0x{spec.FLAG_NEED_REPLY:x} }}",
        "",
        "-- Requests by channel and id: name, request layout, reply layout(s).",
        "local REQUESTS = {",
    ]
    for channel in spec.FRAMED_CHANNELS:
        out += _requests(channel)
    out += ["}", "", "-- Fixed payload sizes by layout (absent: the size depends on the content)."]
    sizes = {name: codec.size for name, codec in payloads.LAYOUTS.items() if codec.size is not None}
    out.append("local LAYOUT_SIZES = { " + ", ".join(f"{k} = {v}" for k, v in sizes.items()) + " }")
    out += ["", "local VALUES = {"]
    out += [f"  {name} = {_table(table)}," for name, table in _values().items()]
    out.append("}")
    out.append("local DEVICE_FEATURES = {")
    for device, names in spec.DEVICE_VIRTIO_FEATURES.items():
        out.append(f"  {device.value} = {_table(names)},")
    out += ["}", "", "-- Config space by device: { name, offset, size, on the summary line }."]
    out.append("local DEVICE_CONFIG = {")
    for device, fields in device_config.LAYOUTS.items():
        items = ", ".join(
            f"{{ {_str(f.name)}, {f.offset}, {struct.calcsize('<' + f.fmt)}, "
            f"{'true' if f.in_summary else 'false'} }}"
            for f in fields
        )
        out.append(f"  {device.value} = {{ {items} }},")
    out += [
        "}",
        "",
        "-- Struct layouts: { field key, size in bytes } in wire order.",
        "local STRUCTS = {",
    ]
    for name, entries in all_structs().items():
        items = ", ".join(f"{{ {_str(k)}, {s} }}" for k, s in entries)
        out.append(f"  {name} = {{ {items} }},")
    out += ["}", "", "local F = {}"]
    out += [_field_line(field) for field in FIELDS]
    out.append(END)
    return "\n".join(out) + "\n"


def regenerate(text: str) -> str:
    """The Lua source with its generated block replaced by a fresh one."""
    start, end = text.index(BEGIN), text.index(END)
    end = text.index("\n", end) + 1
    return text[:start] + generated_block() + text[end:]


def shipped_source() -> str:
    """The Lua file as installed with vhtrace."""
    return resources.files("vhtrace.dissect").joinpath(LUA_FILE).read_text()


def lua_source() -> str:
    """The Lua dissector, its tables those of the running vhtrace."""
    return regenerate(shipped_source())


def main() -> int:
    """Rewrite the generated block of the source tree's vhost-user.lua."""
    path = Path(__file__).with_name(LUA_FILE)
    old = path.read_text()
    new = regenerate(old)
    if new != old:
        path.write_text(new)
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
