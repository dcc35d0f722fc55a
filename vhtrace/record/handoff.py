"""What the relay hands the recorder, typed, and how it crosses the socket between them.

The relay and the recorder are two processes (docs/record.md, "Two processes"): the
relay forwards and then hands over each record below; the recorder describes the fds,
analyses, snapshots and writes. The records are the trace's own types
(:mod:`vhtrace.trace.records`); a message or stream chunk comes in a :class:`Relayed`
envelope saying how many fds follow it and whether the relay holds it for a
``before:NAME`` snapshot. In a relayed record, ``fds`` holds the relay's note on each
fd (``{"interposed": "backend"}``, ``{}`` for none); the recorder adds what the fd is.

On the socket each item is one msgpack array ``[tag, ...fields]``. The fds of the
items ride with SCM_RIGHTS on the sendmsg that carries the items' first byte, in item
order, so the reader keeps the fds it received in a queue and each item takes its
``nfds`` from the front when it is unpacked.

Back from the recorder come :class:`Release` (a held message's snapshot is taken: may
it still go?), :class:`Failed` and :class:`Finished` (its statistics); the relay
answers a release with :class:`Answer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from vhtrace.protocol.findings import Finding
from vhtrace.trace.records import EventRecord, FindingRecord, MessageRecord, StreamRecord

MAX_ITEM_BYTES = 64 << 20
"""The largest item a reader accepts (a message is at most a few MiB)."""


class Relayed(NamedTuple):
    """A message or stream chunk as it crossed the wire, and its fds (a tuple: one is made
    per message, on the relay's path)."""

    record: MessageRecord | StreamRecord
    """``fds`` here: the relay's note on each fd, in order."""
    nfds: int
    """How many fds follow it on the socket (fewer than its notes if they were shed)."""
    hold: int = 0
    """Not 0: the relay holds the message until the recorder releases this hold."""

    @property
    def size(self) -> int:
        """Bytes of the wire it carries."""
        record = self.record
        return len(record.raw) if type(record) is MessageRecord else len(record.data)


@dataclass(frozen=True, slots=True)
class SnapshotNow:
    """A snapshot of every session now (SIGUSR1)."""

    trigger: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The relay has stopped: finish the trace, with this added to its summary."""

    summary: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """Relay to recorder: was the held message still held when its release came?"""

    hold: int
    held: bool


@dataclass(frozen=True, slots=True)
class Release:
    """Recorder to relay: the snapshot before the held message is taken."""

    hold: int


@dataclass(frozen=True, slots=True)
class Failed:
    """Recorder to relay: recording stopped (its statistics say why and from where)."""

    stats: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finished:
    """Recorder to relay: the trace is complete; its statistics."""

    stats: dict[str, Any]


ToRecorder = Relayed | EventRecord | FindingRecord | SnapshotNow | Stop | Answer
FromRecorder = Release | Failed | Finished


def encode(item: ToRecorder | FromRecorder) -> bytes:
    """One item as msgpack bytes."""
    return _PACKER.pack(_fields(item))


def _fields(item: ToRecorder | FromRecorder) -> tuple[Any, ...]:
    match item:
        case Relayed(MessageRecord() as m, nfds, hold):
            return (
                "m",
                nfds,
                hold,
                m.seq,
                m.mono_ns,
                m.wall_ns,
                m.session,
                m.channel,
                m.sender,
                m.raw,
                m.fds,
                m.flags,
            )
        case Relayed(StreamRecord() as s, nfds, _):
            return (
                "s",
                nfds,
                s.seq,
                s.mono_ns,
                s.wall_ns,
                s.session,
                s.channel,
                s.sender,
                s.data,
                s.fds,
            )
        case EventRecord():
            return ("e", *item)
        case FindingRecord(session, finding):
            return ("f", session, finding.to_dict())
        case SnapshotNow(trigger):
            return ("n", trigger)
        case Stop(summary):
            return ("x", summary)
        case Answer(hold, held):
            return ("a", hold, held)
        case Release(hold):
            return ("r", hold)
        case Failed(stats):
            return ("F", stats)
        case Finished(stats):
            return ("S", stats)
    raise TypeError(f"not a hand-off item: {item!r}")


def decode(fields: tuple[Any, ...] | list[Any]) -> ToRecorder | FromRecorder:
    """The item of one unpacked msgpack array (ValueError if it is none)."""
    tag = fields[0]
    if tag == "m":
        _, nfds, hold, seq, mono, wall, session, channel, sender, raw, fds, flags = fields
        record = MessageRecord(
            seq, mono, wall, session, channel, sender, raw, tuple(dict(f) for f in fds), flags
        )
        return Relayed(record, nfds, hold)
    if tag == "s":
        _, nfds, seq, mono, wall, session, channel, sender, data, fds = fields
        stream = StreamRecord(
            seq, mono, wall, session, channel, sender, data, tuple(dict(f) for f in fds)
        )
        return Relayed(stream, nfds)
    if tag == "e":
        _, mono, wall, session, event, info = fields
        return EventRecord(mono, wall, session, event, dict(info))
    if tag == "f":
        return FindingRecord(fields[1], Finding.from_dict(dict(fields[2])))
    simple: dict[str, Any] = {
        "n": SnapshotNow,
        "x": Stop,
        "a": Answer,
        "r": Release,
        "F": Failed,
        "S": Finished,
    }
    if tag in simple:
        return simple[tag](*fields[1:])
    raise ValueError(f"hand-off item: unknown tag {tag!r}")


def unpacker() -> msgpack.Unpacker:
    """A streaming reader of items (feed it bytes, iterate for field arrays)."""
    return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_ITEM_BYTES)


_PACKER = msgpack.Packer(use_bin_type=True)
