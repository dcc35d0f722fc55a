"""Reproducers: what one run sent and received, written as a vhtrace trace.

The trace is written with the ordinary :class:`~vhtrace.trace.writer.TraceWriter` (mode
0600), one session per connection, the fuzzer as the front-end, so ``vhtrace show``
reads it and ``vhtrace replay REPRO --backend SOCK`` sends the same messages again (the
replies recorded are where replay waits). The header says where it came from (seed,
iteration, signature, mutations). Memory fds are recorded by kind and size, and what
the fuzzer filled each with (the source trace's snapshot pages) as ``memory-fill``
events before the message that passed it (``replay.memsource.FillSource``): a finding
can depend on what guest memory held. A ring attack's writes into guest memory and its
kick are events after the message that started the ring (``replay.guestwrites``).
Replay makes both again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vhtrace.fuzz.driver import MemoryFill, Transcript
from vhtrace.replay.guestwrites import GuestAction
from vhtrace.replay.memsource import fill_event
from vhtrace.trace.writer import TraceWriter, make_header


def write_reproducer(
    path: Path, transcript: Transcript, *, device: str | None, info: dict[str, Any]
) -> Path:
    header = make_header(
        device=device,
        endpoints={"frontend": "vhtrace fuzz", "backend": str(info.get("backend", "?"))},
        fuzz=info,
    )
    mono0, wall0 = header["mono_ns"], header["wall_ns"]
    first = transcript.messages[0].mono_ns if transcript.messages else time.monotonic_ns()
    writer = TraceWriter(str(path), header)
    session = 0
    t = mono0
    actions: dict[int, list[GuestAction]] = {}
    for action in transcript.actions:
        actions.setdefault(action.after, []).append(action)
    fills: dict[int, list[MemoryFill]] = {}
    for fill in transcript.fills:
        fills.setdefault(fill.message, []).append(fill)

    def times(mono: int) -> tuple[int, int]:
        offset = max(0, mono - first)
        return mono0 + offset, wall0 + offset

    for seq, sent in enumerate(transcript.messages, 1):
        t, wall = times(sent.mono_ns)
        if sent.session != session:
            if session:
                _end(writer, t, wall, session, transcript)
            session = sent.session
            writer.event(t, wall, session, "session-start", {})
        for fill in fills.get(seq, ()):
            writer.event(t, wall, session, *fill_event(seq, fill.fd, fill.offset, fill.data))
        writer.message(
            seq, t, wall, session, sent.channel.value, sent.sender.value, sent.raw, sent.fds
        )
        for action in actions.get(seq, ()):
            writer.event(t, wall, session, *action.event())
    if session:
        _end(writer, t + 1000, wall0 + (t - mono0) + 1000, session, transcript)
    writer.close({"messages": len(transcript.messages)})
    return path


def _end(writer: TraceWriter, mono: int, wall: int, session: int, transcript: Transcript) -> None:
    reason = transcript.endings.get(session, "frontend closed")
    writer.event(mono, wall, session, "session-end", {"reason": reason})
