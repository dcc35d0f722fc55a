"""Scapy layers for vhost-user: the 12-byte header and one class per payload layout.

Why this shape:

* A payload's layout depends on the request id, the REPLY flag *and* the
  channel (ids overlap between the main socket and the back-end channel), so
  there are two header classes, :class:`VhostUser` (main socket) and
  :class:`VhostUserBackend` (back-end channel); their request enums come from
  the tables of :mod:`vhtrace.protocol.spec`.
* A reply's layout depends on the request it answers, which only the
  conversation knows (a postcopy memory-table reply, GET_INFLIGHT_FD's reply,
  an ack). Standalone, the header follows the table (``payload``, or
  ``reply_payload`` when REPLY is set); :func:`vhtrace.scapy.read_trace` passes
  the conversation's answer as ``layout=`` and the negotiated ``context=``
  (packed rings, XEN_MMAP regions).
* Fixed structs take their field names, order and widths from the codec's
  struct format in :mod:`vhtrace.protocol.payloads`, so they cannot drift
  from it; only the presentation (hex, enums, flag names) is chosen here.
* Dissection never raises on a message and ``raw()`` gives back the input byte
  for byte: the header cuts its payload at ``size`` (what follows is Padding),
  bytes a layout does not define stay as a Raw layer, a payload too short for
  its layout is a Raw layer, and a message cut inside its header keeps its bytes.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from scapy.config import conf
from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    Field,
    FieldListField,
    FlagsField,
    LEFieldLenField,
    LEIntEnumField,
    LEIntField,
    LELongEnumField,
    LELongField,
    LEShortField,
    LESignedLongField,
    MACField,
    PacketListField,
    StrField,
    StrFixedLenField,
    StrLenField,
    UUIDField,
    XLELongField,
)
from scapy.packet import Packet, Raw

from vhtrace.dissect.meta import RecordInfo
from vhtrace.protocol import payloads, spec
from vhtrace.protocol.payloads import DEFAULT_CONTEXT, PayloadContext
from vhtrace.protocol.spec import HEADER_SIZE, Channel

DLT_USER0 = 147
"""The link type scapy writes vhost-user packets with (see :func:`register_user_dlt`)."""

# --------------------------------------------------------------------------
# Field helpers
# --------------------------------------------------------------------------


def bit_names(names: dict[int, str], width: int) -> list[str]:
    """Flag names for a FlagsField, lowest bit first ('bitN' where the spec has none)."""
    return [names.get(bit, f"bit{bit}") for bit in range(width)]


def _le_flags(name: str, names: dict[int, str], width: int) -> FlagsField:
    """A little-endian flags field of ``width`` bits named by bit position."""
    return FlagsField(name, 0, -width, bit_names(names, width))


_INT_FIELDS: dict[str, Callable[[str, int], Field[Any, Any]]] = {
    "B": ByteField,
    "H": LEShortField,
    "I": LEIntField,
    "Q": XLELongField,
    "q": LESignedLongField,
}
_FMT_TOKEN = re.compile(r"(\d*)([a-zA-Z?])")


RENAMED = {"direction": "transfer_direction"}
"""Codec field names that scapy's Packet already uses for itself (a slot), and
what the scapy field is called instead."""


def scapy_name(name: str) -> str:
    """The scapy field name of a codec field."""
    return RENAMED.get(name, name)


def struct_fields(layout: str, **overrides: Field[Any, Any]) -> list[Field[Any, Any]]:
    """Scapy fields for a struct layout of the codec, in its order and widths.

    ``overrides`` (by codec field name) replace a field's presentation (an
    enum, flags, decimal); each must keep the codec's width, checked here."""
    codec = payloads.LAYOUTS[layout]
    if not isinstance(codec, payloads.StructLayout):
        raise TypeError(f"{layout} is not a fixed struct")
    names = list(codec.field_names)
    fields: list[Field[Any, Any]] = []
    for count, code in _FMT_TOKEN.findall(codec.fmt):
        repeat, size = (1, int(count)) if code == "s" else (int(count or 1), 0)
        for _ in range(repeat):
            codec_name = names.pop(0)
            name = scapy_name(codec_name)
            if code == "s":
                default: Field[Any, Any] = StrFixedLenField(name, b"\0" * size, size)
            else:
                default = _INT_FIELDS[code](name, 0)
                size = struct.calcsize("<" + code)
            field = overrides.pop(codec_name, default)
            if field.name != name or field.sz != size:
                raise ValueError(f"{layout}.{name}: override does not fit {code!r}")
            fields.append(field)
    if names or overrides:
        raise ValueError(f"{layout}: fields {names or list(overrides)} do not match the codec")
    return fields


def _vring_word_fields(first: str) -> list[Field[Any, Any]]:
    """A u64 with the ring index in bits 0-7 and 'no fd' in bit 8, the rest reserved.

    Little-endian, so the index is byte 0; bytes 1-7 form a 56-bit group whose
    lowest bit is NOFD ('reserved' is that group shifted right by one)."""
    assert spec.VRING_IDX_MASK == 0xFF and spec.VRING_NOFD_MASK == 0x100
    return [
        ByteField(first, 0),
        BitField("reserved", 0, 55, tot_size=-7),
        BitField("nofd", 0, 1, end_tot_size=-7),
    ]


# --------------------------------------------------------------------------
# Payload classes and their registry
# --------------------------------------------------------------------------

LAYOUT_CLASSES: dict[str, type[VhostUserPayload]] = {}
"""The payload class of each layout name, for the default context."""
_VARIANTS: dict[tuple[str, str], type[VhostUserPayload]] = {}
"""Classes for a layout under a context flag: ('mem_table', 'xen_mmap'), ..."""


_P = TypeVar("_P", bound="type[VhostUserPayload]")


def _register(cls: _P) -> _P:
    variant = cls.variant
    if variant:
        _VARIANTS[cls.layout, variant] = cls
    else:
        LAYOUT_CLASSES[cls.layout] = cls
    return cls


def payload_class(layout: str | None, context: PayloadContext = DEFAULT_CONTEXT) -> type[Packet]:
    """The class that reads a payload of this layout in this context (Raw if unknown)."""
    if layout is None:
        return Raw
    for flag in ("xen_mmap", "packed"):
        if getattr(context, flag) and (layout, flag) in _VARIANTS:
            return _VARIANTS[layout, flag]
    return LAYOUT_CLASSES.get(layout, Raw)


class VhostUserPayload(Packet):
    """Base of the payload classes: its layout name, its one-line summary."""

    layout: ClassVar[str] = ""
    variant: ClassVar[str] = ""
    """The context flag this class is for ('' for the default context)."""

    def payload_context(self) -> PayloadContext:
        """The conversation's context if the packet came from a trace, else the class's."""
        record = getattr(self.underlayer, "record", None)
        if record is not None:
            return record.context
        if not self.variant:
            return DEFAULT_CONTEXT
        return DEFAULT_CONTEXT._replace(**{self.variant: True})

    def mysummary(self) -> str:
        """The summary vhtrace itself shows, from the codec."""
        ctx = self.payload_context()
        return payloads.decode(self.layout, bytes(self), ctx).summary(ctx)


@_register
class VhostUserEmpty(VhostUserPayload):
    """No payload (a non-empty one is kept as Raw)."""

    name = "vhost-user empty payload"
    layout = "empty"
    fields_desc: ClassVar[list[Field[Any, Any]]] = []


@_register
class VhostUserU64(VhostUserPayload):
    name = "vhost-user u64"
    layout = "u64"
    fields_desc = struct_fields("u64", value=LELongField("value", 0))


@_register
class VhostUserAck(VhostUserPayload):
    """A REPLY_ACK reply: 0 is success."""

    name = "vhost-user ack"
    layout = "ack"
    fields_desc = struct_fields("ack", value=LELongEnumField("value", 0, {0: "ok"}))


@_register
class VhostUserLogReply(VhostUserPayload):
    """SET_LOG_BASE's reply: a u64 or nothing at all (then there is no payload layer)."""

    name = "vhost-user log reply"
    layout = "log_reply"
    fields_desc = [LELongField("value", 0)]


@_register
class VhostUserFeatures(VhostUserPayload):
    """GET/SET_FEATURES: virtio feature bits (device bits show as bitN)."""

    name = "vhost-user virtio features"
    layout = "virtio_features"
    fields_desc = struct_fields(
        "virtio_features", features=_le_flags("features", spec.COMMON_VIRTIO_FEATURES, 64)
    )


@_register
class VhostUserProtocolFeatures(VhostUserPayload):
    name = "vhost-user protocol features"
    layout = "protocol_features"
    fields_desc = struct_fields(
        "protocol_features",
        features=_le_flags("features", {f.value: f.name for f in spec.ProtocolFeature}, 64),
    )


@_register
class VhostUserStatus(VhostUserPayload):
    name = "vhost-user device status"
    layout = "status"
    fields_desc = struct_fields("status", status=_le_flags("status", spec.VIRTIO_STATUS_BITS, 64))


@_register
class VhostUserVringFd(VhostUserPayload):
    """SET_VRING_KICK/CALL/ERR: ring index and NOFD in a u64."""

    name = "vhost-user vring fd"
    layout = "vring_fd"
    fields_desc = _vring_word_fields("index")


@_register
class VhostUserRarpMac(VhostUserPayload):
    name = "vhost-user RARP MAC"
    layout = "rarp_mac"
    fields_desc = [MACField("mac", "00:00:00:00:00:00"), StrFixedLenField("padding", b"\0\0", 2)]


@_register
class VhostUserDeviceStateResult(VhostUserPayload):
    """SET_DEVICE_STATE_FD's reply: error in bits 0-7, 'no fd' in bit 8."""

    name = "vhost-user device state result"
    layout = "device_state_result"
    fields_desc = _vring_word_fields("error")


@_register
class VhostUserVringState(VhostUserPayload):
    name = "vhost-user vring state"
    layout = "vring_state"
    fields_desc = struct_fields("vring_state")


@_register
class VhostUserVringIndex(VhostUserPayload):
    name = "vhost-user vring index"
    layout = "vring_index"
    fields_desc = struct_fields("vring_index")


@_register
class VhostUserVringEnable(VhostUserPayload):
    name = "vhost-user vring enable"
    layout = "vring_enable"
    fields_desc = struct_fields("vring_enable")


@_register
class VhostUserVringEndian(VhostUserPayload):
    name = "vhost-user vring endian"
    layout = "vring_endian"
    fields_desc = struct_fields("vring_endian")


@_register
class VhostUserVringBase(VhostUserPayload):
    """SET/GET_VRING_BASE of a split ring: num is the next avail index."""

    name = "vhost-user vring base"
    layout = "vring_base"
    fields_desc = struct_fields("vring_base")


@_register
class VhostUserVringBasePacked(VhostUserPayload):
    """SET/GET_VRING_BASE of a packed ring: two 15-bit indexes and their wrap counters."""

    name = "vhost-user vring base (packed)"
    layout = "vring_base"
    variant = "packed"
    fields_desc = [
        LEIntField("index", 0),
        BitField("avail_wrap", 0, 1, tot_size=-2),
        BitField("last_avail_idx", 0, 15, end_tot_size=-2),
        BitField("used_wrap", 0, 1, tot_size=-2),
        BitField("used_idx", 0, 15, end_tot_size=-2),
    ]


@_register
class VhostUserVringAddr(VhostUserPayload):
    name = "vhost-user vring address"
    layout = "vring_addr"
    fields_desc = struct_fields(
        "vring_addr", flags=_le_flags("flags", {spec.VRING_F_LOG.bit_length() - 1: "LOG"}, 32)
    )


def _region_fields(xen: bool) -> list[Field[Any, Any]]:
    fields: list[Field[Any, Any]] = [XLELongField(name, 0) for name in payloads.REGION_FIELDS]
    if xen:
        fields += [LEIntField(name, 0) for name in payloads.XEN_REGION_FIELDS]
    return fields


class VhostUserRegion(Packet):
    """One memory region of SET_MEM_TABLE (32 bytes)."""

    name = "vhost-user memory region"
    fields_desc = _region_fields(xen=False)

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class VhostUserRegionXen(VhostUserRegion):
    """A memory region with XEN_MMAP's flags and domain (40 bytes)."""

    name = "vhost-user memory region (xen)"
    fields_desc = _region_fields(xen=True)


def _mem_table_fields(region: type[Packet]) -> list[Field[Any, Any]]:
    return [
        LEFieldLenField("nregions", None, count_of="regions", fmt="<I"),
        LEIntField("padding", 0),
        PacketListField(
            "regions",
            [],
            region,
            count_from=lambda pkt: pkt.nregions,
            max_count=spec.MAX_PAYLOAD // payloads.region_size(DEFAULT_CONTEXT),
        ),
    ]


@_register
class VhostUserMemTable(VhostUserPayload):
    name = "vhost-user memory table"
    layout = "mem_table"
    fields_desc = _mem_table_fields(VhostUserRegion)


@_register
class VhostUserMemTableXen(VhostUserPayload):
    name = "vhost-user memory table (xen)"
    layout = "mem_table"
    variant = "xen_mmap"
    fields_desc = _mem_table_fields(VhostUserRegionXen)


@_register
class VhostUserMemRegion(VhostUserPayload):
    """ADD_MEM_REG / REM_MEM_REG: u64 padding and one region."""

    name = "vhost-user single memory region"
    layout = "mem_region"
    fields_desc = [XLELongField("padding", 0), *_region_fields(xen=False)]


@_register
class VhostUserMemRegionXen(VhostUserPayload):
    name = "vhost-user single memory region (xen)"
    layout = "mem_region"
    variant = "xen_mmap"
    fields_desc = [XLELongField("padding", 0), *_region_fields(xen=True)]


@_register
class VhostUserLog(VhostUserPayload):
    name = "vhost-user log"
    layout = "log"
    fields_desc = struct_fields("log")


@_register
class VhostUserIotlb(VhostUserPayload):
    name = "vhost-user IOTLB message"
    layout = "iotlb"
    fields_desc = struct_fields(
        "iotlb",
        perm=ByteEnumField("perm", 0, payloads.IOTLB_PERMS),
        type=ByteEnumField("type", 0, payloads.IOTLB_TYPES),
    )


@_register
class VhostUserConfig(VhostUserPayload):
    """GET/SET_CONFIG: offset, size, flags, then size bytes of config space."""

    name = "vhost-user config"
    layout = "config"
    fields_desc = [
        LEIntField("offset", 0),
        LEFieldLenField("size", None, length_of="region", fmt="<I"),
        LEIntEnumField("flags", 0, payloads.CONFIG_FLAGS),
        StrLenField("region", b"", length_from=lambda pkt: pkt.size),
    ]


@_register
class VhostUserVringArea(VhostUserPayload):
    """Back-end VRING_HOST_NOTIFIER_MSG: ring index/NOFD u64, size, offset."""

    name = "vhost-user vring area"
    layout = "vring_area"
    fields_desc = [
        *_vring_word_fields("index"),
        XLELongField("size", 0),
        XLELongField("offset", 0),
    ]


@_register
class VhostUserInflight(VhostUserPayload):
    name = "vhost-user inflight"
    layout = "inflight"
    fields_desc = struct_fields("inflight")


@_register
class VhostUserSharedUuid(VhostUserPayload):
    """A shared object's UUID (standard, big-endian byte order)."""

    name = "vhost-user shared object"
    layout = "shared_uuid"
    fields_desc = [UUIDField("uuid", uuid.UUID(int=0))]


@_register
class VhostUserDeviceState(VhostUserPayload):
    name = "vhost-user device state transfer"
    layout = "device_state"
    fields_desc = struct_fields(
        "device_state",
        direction=LEIntEnumField("transfer_direction", 0, payloads.DEVICE_STATE_DIRECTIONS),
        phase=LEIntEnumField("phase", 0, payloads.DEVICE_STATE_PHASES),
    )


@_register
class VhostUserShmemMap(VhostUserPayload):
    name = "vhost-user shmem map"
    layout = "shmem_map"
    fields_desc = struct_fields(
        "shmem_map",
        flags=_le_flags(
            "flags", {bit.bit_length() - 1: n for bit, n in payloads.SHMEM_MAP_FLAGS.items()}, 64
        ),
    )


@_register
class VhostUserShmemConfig(VhostUserPayload):
    """GET_SHMEM_CONFIG's reply: nregions, padding, 256 region sizes."""

    name = "vhost-user shmem config"
    layout = "shmem_config"
    fields_desc = [
        LEIntField("nregions", 0),
        LEIntField("padding", 0),
        FieldListField(
            "memory_sizes",
            [],
            XLELongField("size", 0),
            count_from=lambda pkt: spec.SHMEM_MAX_REGIONS,
            max_count=spec.SHMEM_MAX_REGIONS,
        ),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        """Built by hand: pad the size list to its 256 entries, as the codec does."""
        full = payloads.LAYOUTS[self.layout].size or 0
        return pkt.ljust(full, b"\0") + pay


# Crypto sessions: QEMU's current layout (op_code first), its older one
# (session id first), anything else kept raw; see payloads.CryptoSession.
_CRYPTO = payloads.CryptoSession
_SYM_KEY, _SYM_AUTH_KEY, _ASYM_KEY = (
    payloads.CRYPTO_SYM_MAX_KEY,
    payloads.CRYPTO_SYM_MAX_AUTH_KEY,
    payloads.CRYPTO_ASYM_MAX_KEY,
)


def _sym_info_fields(cond: Callable[[Packet], bool] | None) -> list[Field[Any, Any]]:
    fields: list[Field[Any, Any]] = [
        *(LEIntField(name, 0) for name in ("cipher_alg", "key_len", "hash_alg")),
        *(LEIntField(name, 0) for name in ("hash_result_len", "auth_key_len", "add_len")),
        *(ByteField(scapy_name(n), 0) for n in ("op_type", "direction", "hash_mode")),
        ByteField("alg_chain_order", 0),
    ]
    return [ConditionalField(f, cond) for f in fields] if cond else fields


def _is_sym(pkt: Packet) -> bool:
    return pkt.op_code != 1


@_register
class VhostUserCryptoSession(VhostUserPayload):
    """CREATE_CRYPTO_SESSION, QEMU's current layout (1072 bytes).

    A union of a symmetric and an asymmetric session, chosen by op_code; the
    asymmetric fields whose codec names the symmetric ones also use are
    prefixed ``asym_`` (scapy wants one name per field)."""

    name = "vhost-user crypto session"
    layout = "crypto_session"
    fields_desc = [
        LELongEnumField("op_code", 0, payloads.CRYPTO_OP_CODES),
        *_sym_info_fields(_is_sym),
        ConditionalField(StrFixedLenField("info_padding", b"\0" * 4, 4), _is_sym),
        ConditionalField(XLELongField("cipher_key_ptr", 0), _is_sym),
        ConditionalField(XLELongField("auth_key_ptr", 0), _is_sym),
        ConditionalField(StrFixedLenField("key", b"", _SYM_KEY), _is_sym),
        ConditionalField(StrFixedLenField("auth_key", b"", _SYM_AUTH_KEY), _is_sym),
        ConditionalField(
            StrFixedLenField(
                "union_tail", b"", _CRYPTO.NEW_SIZE - 16 - 48 - _SYM_KEY - _SYM_AUTH_KEY
            ),
            _is_sym,
        ),
        *(
            ConditionalField(LEIntField(name, 0), lambda pkt: not _is_sym(pkt))
            for name in ("algo", "keytype", "keylen")
        ),
        ConditionalField(
            StrFixedLenField("asym_padding", b"\0" * 4, 4), lambda pkt: not _is_sym(pkt)
        ),
        ConditionalField(XLELongField("key_ptr", 0), lambda pkt: not _is_sym(pkt)),
        ConditionalField(LEIntField("param0", 0), lambda pkt: not _is_sym(pkt)),
        ConditionalField(LEIntField("param1", 0), lambda pkt: not _is_sym(pkt)),
        ConditionalField(
            StrFixedLenField("asym_key", b"", _ASYM_KEY), lambda pkt: not _is_sym(pkt)
        ),
        LESignedLongField("session_id", 0),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kwargs: Any) -> type[Packet]:
        """The layout is known by its size only: pick the class that fits."""
        if _pkt is None or len(_pkt) == _CRYPTO.NEW_SIZE:
            return cls
        if len(_pkt) == _CRYPTO.OLD_SIZE:
            return VhostUserCryptoSessionOld
        return VhostUserCryptoSessionRaw


class VhostUserCryptoSessionOld(VhostUserPayload):
    """CREATE_CRYPTO_SESSION, QEMU's layout before asymmetric sessions (632 bytes)."""

    name = "vhost-user crypto session (old layout)"
    layout = "crypto_session"
    fields_desc = [
        LESignedLongField("session_id", 0),
        LEIntEnumField("op_code", 0, payloads.CRYPTO_OP_CODES),
        *_sym_info_fields(None),
        XLELongField("cipher_key_ptr", 0),
        XLELongField("auth_key_ptr", 0),
        StrFixedLenField("key", b"", _SYM_KEY),
        StrFixedLenField("auth_key", b"", _SYM_AUTH_KEY),
    ]


class VhostUserCryptoSessionRaw(VhostUserPayload):
    """A crypto session of a size no known layout has: kept as bytes."""

    name = "vhost-user crypto session (unknown layout)"
    layout = "crypto_session"
    fields_desc = [StrField("data", b"")]


# --------------------------------------------------------------------------
# The header
# --------------------------------------------------------------------------

_FLAG_NAMES = {
    spec.VERSION.bit_length() - 1: "VERSION",
    spec.FLAG_REPLY.bit_length() - 1: "REPLY",
    spec.FLAG_NEED_REPLY.bit_length() - 1: "NEED_REPLY",
}
_DIRECTIONS = {spec.Side.FRONTEND: "FE>BE", spec.Side.BACKEND: "BE>FE"}


def _request_field(channel: Channel) -> LEIntEnumField:
    """The request id, named by the channel's table; aliases and C names are accepted."""
    rows = spec.REQUESTS[channel].values()
    field = LEIntEnumField("request", 0, {row.id: row.name for row in rows})
    for row in rows:
        for name in (*row.aliases, row.c_name):
            field.s2i[name] = row.id
    return field


def default_layout(channel: Channel, request: int, reply: bool) -> str | None:
    """The table's layout for a message on its own: the request's, or its reply's."""
    row = spec.request_spec(channel, request)
    if row is None:
        return None
    return row.reply_payload if reply else row.payload


class VhostUserHeader(Packet):
    """The 12-byte header; subclasses say which channel's requests it carries."""

    __slots__ = ["context_hint", "layout_hint", "record"]
    channel: ClassVar[Channel] = Channel.MAIN

    def __init__(
        self,
        _pkt: bytes = b"",
        *args: Any,
        layout: str | None = None,
        context: PayloadContext | None = None,
        record: RecordInfo | None = None,
        **kwargs: Any,
    ) -> None:
        # Set before dissection: guess_payload_class reads them.
        object.__setattr__(self, "layout_hint", layout)
        object.__setattr__(self, "context_hint", context)
        object.__setattr__(self, "record", record)
        super().__init__(_pkt, *args, **kwargs)

    # -- what the trace knows ------------------------------------------------

    @property
    def session(self) -> int | None:
        return self.record.session if self.record else None

    @property
    def seq(self) -> int | None:
        return self.record.seq if self.record else None

    @property
    def sender(self) -> str | None:
        return self.record.sender.value if self.record else None

    @property
    def fds(self) -> tuple[dict[str, Any], ...]:
        return self.record.fds if self.record else ()

    @property
    def findings(self) -> list[str]:
        return [str(f) for f in self.record.findings] if self.record else []

    # -- dissection ----------------------------------------------------------

    def do_dissect(self, s: bytes) -> bytes:
        if len(s) >= HEADER_SIZE:
            return super().do_dissect(s)
        # Cut inside the header: keep the bytes as they are, decode what is whole.
        for field, offset in zip(self.fields_desc, range(0, len(s) - 3, 4), strict=False):
            self.fields[field.name] = field.m2i(self, struct.unpack_from("<I", s, offset)[0])
        self.raw_packet_cache, self.raw_packet_cache_fields, self.explicit = s, {}, 1
        return b""

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        if self.size is None:
            return s, b""
        return s[: self.size], s[self.size :]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        layout = self.layout_hint
        if layout is None:
            layout = default_layout(self.channel, self.request, bool(self.flags.REPLY))
        return payload_class(layout, self.context_hint or DEFAULT_CONTEXT)

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        """Fill in ``size`` when it was left unset."""
        if self.size is None:
            pkt = pkt[:8] + struct.pack("<I", len(pay)) + pkt[12:]
        return pkt + pay

    # -- scapy conveniences --------------------------------------------------

    def _keep_slots(self, clone: Any) -> Any:
        """Copies keep what the trace said about the message."""
        for slot in ("record", "layout_hint", "context_hint"):
            object.__setattr__(clone, slot, getattr(self, slot))
        return clone

    def copy(self) -> Any:
        return self._keep_slots(super().copy())

    def clone_with(self, payload: Any = None, **kwargs: Any) -> Any:
        return self._keep_slots(super().clone_with(payload, **kwargs))

    def _do_summary(self) -> tuple[int, str, list[Any]]:
        """Always name the request, whatever the layers below say about themselves."""
        _, below, needed = self.payload._do_summary()
        return 1, " / ".join(text for text in (self.mysummary(), below) if text), needed

    def mysummary(self) -> str:
        parts = ["vhost-user" if self.channel is Channel.MAIN else "vhost-user/backend"]
        if self.record is not None:
            parts += [f"#{self.record.seq}", _DIRECTIONS[self.record.sender]]
        if len(self.original) < HEADER_SIZE and self.raw_packet_cache == self.original:
            return " ".join([*parts, f"cut inside its header ({len(self.original)} bytes)"])
        parts.append(self.sprintf(f"%{self.__class__.__name__}.request%"))
        flags = self.flags
        parts += [word for word in ("REPLY", "NEED_REPLY") if getattr(flags, word)]
        return " ".join(parts)

    def hashret(self) -> bytes:
        return struct.pack("<I", self.request) + self.channel.value.encode()

    def answers(self, other: Packet) -> int:
        """A reply answers a request of the same id on the same channel."""
        if not isinstance(other, VhostUserHeader) or other.channel is not self.channel:
            return 0
        if self.record is not None and other.record is not None and self.record.answers:
            return int(self.record.answers == other.record.seq)
        return int(
            bool(self.flags.REPLY) and not other.flags.REPLY and self.request == other.request
        )


class VhostUser(VhostUserHeader):
    """A vhost-user message on the main socket (front-end requests)."""

    name = "vhost-user"
    channel = Channel.MAIN
    fields_desc = [
        _request_field(Channel.MAIN),
        FlagsField("flags", spec.VERSION, -32, bit_names(_FLAG_NAMES, 32)),
        LEIntField("size", None),
    ]


class VhostUserBackend(VhostUserHeader):
    """A vhost-user message on the back-end channel (back-end requests)."""

    name = "vhost-user back-end channel"
    channel = Channel.BACKEND
    fields_desc = [
        _request_field(Channel.BACKEND),
        FlagsField("flags", spec.VERSION, -32, bit_names(_FLAG_NAMES, 32)),
        LEIntField("size", None),
    ]


def _check_names() -> None:
    """No field may hide behind one of scapy's own packet attributes."""
    classes = [*LAYOUT_CLASSES.values(), *_VARIANTS.values(), VhostUserRegionXen]
    classes += [VhostUserCryptoSessionOld, VhostUserCryptoSessionRaw]
    for cls in classes:
        for field in cls.fields_desc:
            if field.name in Packet.__all_slots__:  # type: ignore[attr-defined]
                raise TypeError(f"{cls.__name__}.{field.name} is hidden by scapy's Packet")


_check_names()

HEADER_CLASSES: dict[Channel, type[VhostUserHeader]] = {
    Channel.MAIN: VhostUser,
    Channel.BACKEND: VhostUserBackend,
}


def register_user_dlt(dlt: int = DLT_USER0) -> None:
    """Let ``wrpcap``/``wrpcapng`` write vhost-user packets with a USER link type.

    Only the writing direction is registered: reading a USER DLT is left to
    whoever owns it on this machine."""
    for cls in HEADER_CLASSES.values():
        conf.l2types.register_layer2num(dlt, cls)
