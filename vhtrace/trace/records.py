"""The records of a trace, as light named tuples (the reader makes millions)."""

from __future__ import annotations

from typing import Any, NamedTuple

from vhtrace.protocol.findings import Finding
from vhtrace.protocol.framing import unpack_header
from vhtrace.protocol.spec import HEADER_SIZE, Channel, Side
from vhtrace.trace import format as fmt


class MessageRecord(NamedTuple):
    """One vhost-user message as it crossed a socket."""

    seq: int
    """Message number, unique in the trace, in the order messages were read."""
    mono_ns: int
    wall_ns: int
    session: int
    channel: str
    sender: str
    raw: bytes
    """Header and payload bytes exactly as sent (the payload cut short if flagged)."""
    fds: tuple[dict[str, Any], ...]
    """Metadata of each fd passed with the message, in order."""
    flags: int = 0
    """MESSAGE_* bits of the trace format (oversized, incomplete, dropped)."""

    @property
    def header(self) -> tuple[int, int, int]:
        """(request, flags, size); zeros for a message cut inside its header."""
        if len(self.raw) < HEADER_SIZE:
            return (0, 0, 0)
        return unpack_header(self.raw)

    @property
    def payload(self) -> bytes:
        return self.raw[HEADER_SIZE:]

    @property
    def complete(self) -> bool:
        if len(self.raw) < HEADER_SIZE:
            return False
        return len(self.raw) == HEADER_SIZE + self.header[2] and not self.flags & (
            fmt.MESSAGE_OVERSIZED | fmt.MESSAGE_INCOMPLETE
        )

    @property
    def channel_enum(self) -> Channel:
        return Channel(self.channel)

    @property
    def sender_enum(self) -> Side:
        return Side(self.sender)


class EventRecord(NamedTuple):
    """Something that happened to a connection (opened, closed, a channel set up)."""

    mono_ns: int
    wall_ns: int
    session: int
    event: str
    info: dict[str, Any]


class FindingRecord(NamedTuple):
    """A finding the recorder made that the messages alone do not show (transport)."""

    session: int
    finding: Finding


class StreamRecord(NamedTuple):
    """Bytes of a non-message channel (device-state pipe, GPU socket)."""

    seq: int
    mono_ns: int
    wall_ns: int
    session: int
    channel: str
    sender: str
    data: bytes
    fds: tuple[dict[str, Any], ...] = ()


class EndRecord(NamedTuple):
    """Written when the writer closes cleanly."""

    mono_ns: int
    wall_ns: int
    summary: dict[str, Any]


class PageRecord(NamedTuple):
    """Version 2: one 4 KiB page of guest memory, stored once per trace."""

    hash: bytes
    """16-byte BLAKE2b of the page's bytes: what page maps refer to."""
    codec: int
    """How ``data`` holds the page: PAGE_RAW (the zstd frame compresses it)."""
    data: bytes


class ExtentRecord(NamedTuple):
    """Version 2: what one extent of memory held at a snapshot, as a page map."""

    snapshot: int
    """The snapshot it belongs to (its record follows the extents)."""
    session: int
    space: str
    """``gpa`` (guest memory), ``inflight`` or ``log`` (offsets into those areas)."""
    addr: int
    """First byte, page-aligned."""
    pages: int
    role: str
    """Why it was taken: ``region``, ``desc``, ``avail``, ``used``, ``indirect``,
    ``buffer``, ``inflight``, ``log``; ring parts carry the ring: ``desc:0``."""
    base: int
    """0: ``items`` is an absolute map. N: a delta against the map of the same extent
    (session, space, addr, pages) in snapshot N, the last one that had it."""
    items: tuple[int | bytes, ...]
    """The page map (see vhtrace.memory.pages)."""


class SnapshotRecord(NamedTuple):
    """Version 2: a snapshot of shared memory, committing the extents written before it."""

    snapshot: int
    """Snapshot number, from 1, unique in the trace."""
    seq: int
    """The message that triggered it (0: a timer or a signal)."""
    mono_ns: int
    wall_ns: int
    session: int
    trigger: str
    """``start``, ``stop``, ``before:NAME``, ``after:NAME``, ``every``, ``signal``."""
    info: dict[str, Any]
    """Mode, rings, regions, areas, statistics, problems (docs/trace-format.md)."""


Record = (
    MessageRecord
    | EventRecord
    | FindingRecord
    | StreamRecord
    | EndRecord
    | PageRecord
    | ExtentRecord
    | SnapshotRecord
)
