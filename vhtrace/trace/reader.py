"""Reading traces as a stream, in constant memory, surviving damage.

The file is walked frame by frame (a zstd frame is what the writer flushes),
so a trace cut short by a killed writer or a full disk yields every record
that is complete and then says what was wrong, and junk after a torn frame
is reported where it starts rather than losing the whole read. Input that is
not a trace at all, or a trace from a newer format, raises :class:`TraceError`
before any record is produced.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

import msgpack
import zstandard

from vhtrace import __version__
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.spec import FRAMED_CHANNELS, Side
from vhtrace.trace import format as fmt
from vhtrace.trace.records import (
    EndRecord,
    EventRecord,
    ExtentRecord,
    FindingRecord,
    MessageRecord,
    PageRecord,
    Record,
    SnapshotRecord,
    StreamRecord,
)

READ_CHUNK = 1 << 20
FOLLOW_POLL_S = 0.05
"""How often a followed trace is looked at again when there is nothing new."""
MAX_RECORD = 64 << 20
"""No record is this large; a bigger msgpack object means a corrupt trace."""


class TraceError(Exception):
    """The input is not a trace this vhtrace can read (bad input: exit code 2)."""


class TraceReader:
    """Iterate the records of a trace file.

    After iteration, :attr:`problem` says why the trace ended early (None if it
    ended with its end record) and :attr:`end` holds the end record."""

    def __init__(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        follow: bool = False,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        """``follow``: at the end of the file, wait for the writer to add more (``tail -f``)
        until the end record comes, calling ``on_idle`` before each wait (to flush what
        was printed); the caller stops it early by interrupting (Ctrl-C)."""
        self._follow = follow
        self._on_idle = on_idle
        if isinstance(source, str | os.PathLike):
            self.path = os.fspath(source)
            try:
                self._file: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 (closed in close())
            except OSError as exc:
                raise TraceError(f"{self.path}: {exc.strerror}") from exc
            self._owns_file = True
        else:
            self.path = getattr(source, "name", "<stream>")
            self._file = source
            self._owns_file = False
        self._dctx = zstandard.ZstdDecompressor()
        self._unpacker = msgpack.Unpacker(
            raw=False, use_list=False, max_buffer_size=MAX_RECORD, strict_map_key=False
        )
        self._offset = 0
        """Bytes of the file handed to the decompressor so far."""
        self._frame_start = 0
        self._frames = 0
        self._fed = 0
        self.problem: str | None = None
        self.end: EndRecord | None = None
        self.records = 0
        self._feeding = self._feed_file()
        self.header = self._read_header()

    # -- header ----------------------------------------------------------------

    def _read_header(self) -> dict[str, Any]:
        first = self._file.read(4)
        if first[:4] != fmt.MAGIC:
            self.close()
            raise TraceError(
                f"{self.path}: not a vhtrace trace (it does not start with a zstd frame)"
            )
        self._head = first
        header = self._first_object()
        if header is _NOTHING:
            self.close()
            raise TraceError(
                f"{self.path}: not a vhtrace trace ({self.problem or 'empty'})"
            ) from None
        if not isinstance(header, dict) or header.get("format") != fmt.FORMAT_NAME:
            self.close()
            raise TraceError(f"{self.path}: not a vhtrace trace (no vhtrace header)")
        version = header.get("version")
        problem = _mismatch(version, int, "version")
        if problem is not None:
            self.close()
            raise TraceError(f"{self.path}: corrupt trace header: {problem}")
        if version not in fmt.READABLE_VERSIONS:
            self.close()
            needs = header.get("needs", "a newer version")
            raise TraceError(
                f"{self.path}: trace format version {version}: this trace needs vhtrace >= "
                f"{needs} (this is vhtrace {__version__}, which reads versions "
                f"{', '.join(map(str, sorted(fmt.READABLE_VERSIONS)))})"
            )
        problem = _mismatch(header, _HEADER, "")
        if problem is not None:
            self.close()
            raise TraceError(f"{self.path}: corrupt trace header: {problem}")
        if header.get("byteorder", "little") != "little":
            self.close()
            raise TraceError(
                f"{self.path}: recorded on a {header['byteorder']}-endian host; "
                "vhtrace decodes little-endian traces only"
            )
        return header

    # -- bytes -> objects -------------------------------------------------------

    def _chunks(self) -> Iterator[bytes]:
        yield self._head
        while True:
            chunk = self._file.read(READ_CHUNK)
            if chunk:
                yield chunk
            elif not self._follow or self.end is not None:
                return
            else:  # a live trace: the writer flushes a frame at least every 100 ms
                if self._on_idle is not None:
                    self._on_idle()
                time.sleep(FOLLOW_POLL_S)

    def _feed_file(self) -> Iterator[None]:
        """Decompress the file frame by frame into the unpacker, yielding after each
        piece fed: the caller takes the objects out of the unpacker before resuming.
        Ends, with self.problem set, at the first damage."""
        dobj = self._dctx.decompressobj()
        in_frame = False
        for chunk in self._chunks():
            data = chunk
            while data:
                if not in_frame:
                    in_frame = True
                    self._frame_start = self._offset
                try:
                    out = dobj.decompress(data)
                except zstandard.ZstdError as exc:
                    self.problem = (
                        f"corrupt data in the zstd frame starting at byte "
                        f"{self._frame_start}: {exc}"
                    )
                    return
                if out:
                    try:
                        self._unpacker.feed(out)
                    except msgpack.BufferFull:
                        self.problem = (
                            f"corrupt record after {self.records} records: "
                            f"larger than {MAX_RECORD >> 20} MiB"
                        )
                        return
                    self._fed += len(out)
                    yield
                if dobj.eof:
                    unused = dobj.unused_data
                    self._offset += len(data) - len(unused)
                    data = unused
                    dobj = self._dctx.decompressobj()
                    in_frame = False
                    self._frames += 1
                else:
                    self._offset += len(data)
                    data = b""
        if in_frame:
            self.problem = f"cut short inside the zstd frame starting at byte {self._frame_start}"
        elif self._unpacker.tell() != self._fed:
            self.problem = "cut short inside a record"

    def _corrupt(self, exc: Exception) -> None:
        # TypeError: a corrupt map whose key is a map or an array ("unhashable type")
        self.problem = f"corrupt record after {self.records} records: {exc}"

    def _first_object(self) -> Any:
        """The first object of the file (the header), or _NOTHING."""
        while True:
            try:
                for obj in self._unpacker:
                    return obj
            except _UNPACK_ERRORS as exc:
                self._corrupt(exc)
                return _NOTHING
            if next(self._feeding, _NOTHING) is _NOTHING:
                return _NOTHING

    # -- objects -> records -----------------------------------------------------

    def __iter__(self) -> Iterator[Record]:
        unpacker, feeding = self._unpacker, self._feeding
        channels, senders, tag = _MESSAGE_CHANNELS, _SENDERS, fmt.TAG_MESSAGE
        try:
            while True:
                try:
                    # Nothing in this loop's body raises the unpacker's errors: what is
                    # caught below comes from unpacking.
                    for obj in unpacker:
                        # The common case inline: a message record whose fields have the
                        # types of _FIELD_TYPES[TAG_MESSAGE] and pass _valid_values (checked
                        # one by one: faster than building the tuple of types). Anything else
                        # goes through _record.
                        if type(obj) is tuple and len(obj) == 10:
                            tag_, seq, mono, wall, session, channel, sender, raw, fds, flags = obj
                            if (
                                tag_ == tag
                                and type(seq) is int
                                and type(mono) is int
                                and type(wall) is int
                                and type(session) is int
                                and type(channel) is str
                                and channel in channels
                                and type(sender) is str
                                and sender in senders
                                and type(raw) is bytes
                                and type(flags) is int
                                and (fds == () or (type(fds) is tuple and _fds_valid(fds)))
                            ):
                                self.records += 1
                                yield _new_tuple(MessageRecord, obj[1:])
                                continue
                        record = self._record(obj)
                        if record is None:
                            continue
                        self.records += 1
                        yield record
                except _UNPACK_ERRORS as exc:
                    self._corrupt(exc)
                    break
                if next(feeding, _NOTHING) is _NOTHING:
                    break
        except _Stop:
            pass
        if self.problem is None and self.end is None:
            self.problem = "no end record: the writer did not finish (killed, or still running?)"
        self.close()

    def _record(self, obj: Any) -> Record | None:
        if not isinstance(obj, tuple) or not obj:
            self.problem = f"corrupt record after {self.records} records: not an array"
            raise _Stop
        tag = obj[0]
        types = _FIELD_TYPES.get(tag) if isinstance(tag, str) else None
        if types is None:
            return None  # an unknown tag in a known version: skipped
        fields = obj[1 : 1 + len(types)]
        if tuple(map(type, fields)) != types or not _valid_values(tag, fields):
            # Type-confused fields (a corrupt record that still parses) would crash
            # whatever reads them: stop here, as for any other corruption.
            self.problem = self._describe(tag, fields)
            raise _Stop
        try:
            if tag == fmt.TAG_MESSAGE:
                return MessageRecord._make(fields)
            if tag == fmt.TAG_EVENT:
                return EventRecord._make(fields)
            if tag == fmt.TAG_FINDING:
                return FindingRecord(fields[0], Finding.from_dict(fields[1]))
            if tag == fmt.TAG_STREAM:
                return StreamRecord._make(fields)
            if tag == fmt.TAG_PAGE:
                return PageRecord._make(fields)
            if tag == fmt.TAG_EXTENT:
                return ExtentRecord._make(fields)
            if tag == fmt.TAG_SNAPSHOT:
                return SnapshotRecord._make(fields)
            self.end = EndRecord._make(fields)
            return self.end
        except (TypeError, ValueError) as exc:
            self.problem = f"corrupt {tag!r} record after {self.records} records: {exc}"
            raise _Stop from exc

    def _describe(self, tag: str, fields: tuple[Any, ...]) -> str:
        """The problem of a record whose fields are not what the format says: which
        record (its index, its message or snapshot number) and which field, so that the
        one line a verb prints is enough to find it in ``zstd -dc``."""
        names, schemas = _RECORD_SCHEMAS[tag]
        where = f"{tag!r} record after {self.records} records"
        if tag in (fmt.TAG_MESSAGE, fmt.TAG_STREAM) and fields and type(fields[0]) is int:
            where += f" (message #{fields[0]})"
        elif tag == fmt.TAG_SNAPSHOT and fields and type(fields[0]) is int:
            where += f" (snapshot {fields[0]})"
        if len(fields) < len(schemas):
            return f"corrupt {where}: {len(fields)} fields, expected {len(schemas)}"
        for name, schema, value in zip(names, schemas, fields, strict=False):
            problem = _mismatch(value, schema, name)
            if problem is not None:
                return f"corrupt {where}: {problem}"
        return f"corrupt {where}: {fields!r:.200}"  # a value check (_valid_values)

    def close(self) -> None:
        if self._owns_file and not self._file.closed:
            self._file.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    fmt.TAG_MESSAGE: (int, int, int, int, str, str, bytes, tuple, int),
    fmt.TAG_EVENT: (int, int, int, str, dict),
    fmt.TAG_FINDING: (int, dict),
    fmt.TAG_STREAM: (int, int, int, int, str, str, bytes, tuple),
    fmt.TAG_END: (int, int, dict),
    fmt.TAG_PAGE: (bytes, int, bytes),
    fmt.TAG_EXTENT: (int, int, str, int, int, str, int, tuple),
    fmt.TAG_SNAPSHOT: (int, int, int, int, int, str, dict),
}
"""The types of each record's fields, in order (msgpack arrays read as tuples)."""
_new_tuple = tuple.__new__
_MESSAGE_CHANNELS = frozenset(c.value for c in FRAMED_CHANNELS)
_SENDERS = frozenset(s.value for s in Side)


def _fds_valid(metas: tuple[Any, ...]) -> bool:
    """fd metadata is a map each, its known keys of the types of _FD_META (render and replay
    read them). Unrolled: it runs for every message with fds, in the reader's hot loop."""
    simple, nested = _FD_SIMPLE, _FD_NESTED
    for meta in metas:
        if type(meta) is not dict:
            return False
        for key, value in meta.items():
            kinds = simple.get(key)
            if kinds is not None:
                if type(value) not in kinds:
                    return False
            elif key in nested and _mismatch(value, nested[key], key) is not None:
                return False
    return True


def _valid_values(tag: str, fields: tuple[Any, ...]) -> bool:
    """The checks beyond the fields' own types: a message's channel and sender, and the
    maps and arrays inside records (the schemas of _RECORD_SCHEMAS)."""
    if tag == fmt.TAG_MESSAGE and (fields[4] not in _MESSAGE_CHANNELS or fields[5] not in _SENDERS):
        return False
    names, schemas = _RECORD_SCHEMAS[tag]
    for index in _NESTED[tag]:
        if _mismatch(fields[index], schemas[index], names[index]) is not None:
            return False
    return True


# -- the types of what is inside records ------------------------------------------------
#
# One schema per map a tool reads: the header, fd metadata, event info, snapshot info,
# the end summary. A key may be absent (readers use .get), but when present its value
# has one of the listed types, exactly (msgpack true is not an int here): a trace that
# parses but holds `version: {}` or `stats: 1` is corrupt, reported like a torn frame.


class _Map(NamedTuple):
    """A map whose known keys have these schemas; unknown keys are ignored."""

    keys: dict[str, Any]
    nil: bool = False


class _Array(NamedTuple):
    """An array whose every item has this schema."""

    item: Any
    nil: bool = False


_NIL = type(None)
_ANY = object
"""Anything: the value is only printed (jsonable and _info_value take any msgpack value)."""
_TYPE_NAMES = {int: "int", str: "str", bytes: "bin", dict: "map", tuple: "array",
               _NIL: "nil", bool: "bool", float: "float"}  # fmt: skip
"""msgpack's names for what it decodes to: the words of docs/trace-format.md."""


def _kinds(schema: Any) -> tuple[type, ...]:
    return schema if isinstance(schema, tuple) else (schema,)


def _expected(schema: Any) -> str:
    if isinstance(schema, _Map | _Array):
        name = "map" if isinstance(schema, _Map) else "array"
        return f"{name} or nil" if schema.nil else name
    return " or ".join(_TYPE_NAMES.get(kind, kind.__name__) for kind in _kinds(schema))


def _mismatch(value: Any, schema: Any, where: str) -> str | None:
    """Where ``value`` is not of ``schema``: 'info.stats: expected map, got int 1', or None."""
    if isinstance(schema, _Map | _Array):
        if value is None and schema.nil:
            return None
        if isinstance(schema, _Map) and type(value) is dict:
            for key, sub in schema.keys.items():
                if key in value:
                    problem = _mismatch(value[key], sub, f"{where}.{key}" if where else str(key))
                    if problem is not None:
                        return problem
            return None
        if isinstance(schema, _Array) and type(value) is tuple:
            if schema.item is _ANY:
                return None
            for index, item in enumerate(value):
                problem = _mismatch(item, schema.item, f"{where}[{index}]")
                if problem is not None:
                    return problem
            return None
    elif schema is _ANY or type(value) in _kinds(schema):
        return None
    got = _TYPE_NAMES.get(type(value), type(value).__name__)
    return f"{where}: expected {_expected(schema)}, got {got} {value!r:.40}"


_STR_OR_NIL = (str, _NIL)
_INT_OR_NIL = (int, _NIL)
_HEADER = _Map(
    {
        "format": str,
        "version": int,
        "needs": str,
        "tool": str,
        "wall_ns": int,
        "mono_ns": int,
        "host": str,
        "byteorder": str,
        "command": _Array(str),
        "endpoints": _Map({"frontend": _STR_OR_NIL, "backend": _STR_OR_NIL}),
        "topology": str,
        "device": _STR_OR_NIL,
        "options": _Map(
            {
                "strict": bool,
                "once": bool,
                "snapshot": _STR_OR_NIL,
                "memory": _STR_OR_NIL,
                "snapshot_hold_ms": _INT_OR_NIL,
            }
        ),
    }
)
_FD_META = _Map(
    {
        "kind": str,
        "dev": str,
        "ino": int,
        "size": int,
        "name": str,
        "path": str,
        "seals": _Array(str),
        "flags": _Array(str),
        "family": str,
        "type": str,
        "address": _ANY,
        "interposed": str,
        "error": str,
    }
)
_FD_SIMPLE = {
    key: _kinds(schema)
    for key, schema in _FD_META.keys.items()
    if not isinstance(schema, _Map | _Array) and schema is not _ANY
}
_FD_NESTED = {key: schema for key, schema in _FD_META.keys.items() if isinstance(schema, _Array)}
_PEER = _Map({"pid": int, "uid": int, "program": str})
_EVENT_INFO = _Map(
    {
        "reason": str,
        "device": _STR_OR_NIL,
        "seq": int,
        "by": str,
        "frontend": _PEER,
        "backend": _PEER,
        "frontend_socket": _STR_OR_NIL,
        "backend_socket": _STR_OR_NIL,
    }
)
_RING = _Map(
    {
        # index, num, the addresses and bases: plan.config_problem, per ring
        "layout": str,
        "event_idx": bool,
        "indirect": bool,
        "space": _STR_OR_NIL,
        "enabled": (bool, _NIL),
        "started": (bool, _NIL),
        "problems": _Array(_ANY),
    }
)
_AREA = _Map(
    {
        "mmap_size": int,
        "mmap_offset": int,
        "num_queues": int,
        "queue_size": int,
        "seq": int,
        "readable": int,
        "problem": _STR_OR_NIL,
    },
    nil=True,
)
_STATS = ("extents", "pages", "zero_pages", "new_pages", "new_bytes", "read_bytes",
          "missing_bytes", "left_out_bytes", "outside_bytes")  # fmt: skip
_SNAPSHOT_INFO = _Map(
    {
        "mode": str,
        "request": _STR_OR_NIL,
        "role": _STR_OR_NIL,
        "ring": _INT_OR_NIL,
        "message_mono_ns": _INT_OR_NIL,
        "held": bool,
        "exact": bool,
        "address_space": _STR_OR_NIL,
        "features": _INT_OR_NIL,
        "protocol_features": _INT_OR_NIL,
        "rings": _Array(_RING),
        "regions": _Array(
            _Map(
                {
                    "gpa": int,
                    "size": int,
                    "uaddr": int,
                    "mmap_offset": int,
                    "seq": int,
                    "readable": int,
                    "fd": _Map({"kind": str, "size": int, "name": str}),
                    "problem": _STR_OR_NIL,
                }
            )
        ),
        "inflight": _AREA,
        "log": _AREA,
        "stats": _Map(dict.fromkeys(_STATS, int)),
        "problems": _Array(_ANY),
        "problems_dropped": int,
        "duration_us": int,
    }
)
_SUMMARY = _Map({})
"""Any map: the end summary is only printed (tests write `messages` as an int, too)."""
_FDS = _Array(_FD_META)
_RECORD_SCHEMAS: dict[str, tuple[tuple[str, ...], tuple[Any, ...]]] = {
    fmt.TAG_MESSAGE: (MessageRecord._fields, (int, int, int, int, str, str, bytes, _FDS, int)),
    fmt.TAG_EVENT: (EventRecord._fields, (int, int, int, str, _EVENT_INFO)),
    fmt.TAG_FINDING: (("session", "finding"), (int, _Map({}))),
    fmt.TAG_STREAM: (StreamRecord._fields, (int, int, int, int, str, str, bytes, _FDS)),
    fmt.TAG_END: (EndRecord._fields, (int, int, _SUMMARY)),
    fmt.TAG_PAGE: (PageRecord._fields, (bytes, int, bytes)),
    fmt.TAG_EXTENT: (ExtentRecord._fields, (int, int, str, int, int, str, int, _Array(_ANY))),
    fmt.TAG_SNAPSHOT: (SnapshotRecord._fields, (int, int, int, int, int, str, _SNAPSHOT_INFO)),
}
"""Each record's field names and schemas, in order: what _describe names on a mismatch."""
_NESTED = {
    tag: tuple(i for i, schema in enumerate(schemas) if isinstance(schema, _Map | _Array))
    for tag, (_, schemas) in _RECORD_SCHEMAS.items()
}
"""The fields whose insides _valid_values checks (their own type is in _FIELD_TYPES)."""


_UNPACK_ERRORS = (msgpack.UnpackValueError, msgpack.ExtraData, ValueError, TypeError)
"""What msgpack raises on corrupt input."""
_NOTHING = object()


class _Stop(Exception):
    """Internal: stop iterating, self.problem says why."""


def read_trace(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Record], str | None]:
    """Read a whole (small) trace: header, records and the problem, if any."""
    with TraceReader(path) as reader:
        records = list(reader)
        return reader.header, records, reader.problem
