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


Record = MessageRecord | EventRecord | FindingRecord | StreamRecord | EndRecord
