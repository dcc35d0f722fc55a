"""The trace a front-end fuzz iteration serves: the recorded session with the case's messages.

The case (``frontend.reply_template``) holds the recorded back-end's messages of the
trace's first session, mutated: replies changed, dropped or duplicated, back-end-channel
requests inserted. Each message is anchored to the recorded front-end message it follows
(a reply to its request; an inserted message to whatever the message before it in the
case follows), so the served trace is the recorded front-end side with, after each of
its messages, the case's messages anchored there, in the case's order. Messages are
renumbered in that order (the events that name a message number follow), which is what
``vhtrace replay REPRO --serve`` plays back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vhtrace.fuzz.case import Case, Message
from vhtrace.protocol.spec import Side
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EventRecord, MessageRecord
from vhtrace.trace.writer import TraceWriter


def anchors(case: Case, preceding: dict[int, int]) -> list[tuple[int, Message]]:
    """(recorded message number it follows, message) for each message of the case.

    ``preceding`` maps each recorded back-end message to the recorded front-end message
    before it; a message the recording lacks follows the one before it in the case (the
    first ones: the session's first message)."""
    out: list[tuple[int, Message]] = []
    last = min(preceding.values(), default=0)
    for message in case.messages:
        if message.after is not None:
            last = message.after
        elif message.origin is not None and message.origin in preceding:
            last = preceding[message.origin]
        out.append((last, message))
    return out


def write_served(
    source: str | Path, case: Case, path: Path, info: dict[str, Any], replaced: frozenset[int]
) -> Path:
    """Write the source's first session with ``case`` in place of the recorded messages
    numbered ``replaced`` (the template's); the header carries ``fuzz: info``."""
    with TraceReader(source) as reader:
        header = {**reader.header, "fuzz": info}
        records = []
        session = None
        for record in reader:
            if isinstance(record, MessageRecord):
                session = session or record.session
                if record.session != session:
                    break
                records.append(record)
            elif isinstance(record, EventRecord) and record.session in (session, None, 1):
                records.append(record)
    preceding: dict[int, int] = {}
    last_front = 0
    for record in records:
        if isinstance(record, MessageRecord):
            if record.sender == Side.FRONTEND:
                last_front = record.seq
            elif record.seq in replaced:
                preceding[record.seq] = last_front
    placed: dict[int, list[Message]] = {}
    for anchor, message in anchors(case, preceding):
        placed.setdefault(anchor, []).append(message)
    writer = TraceWriter(str(path), header)
    numbers: dict[int, int] = {}
    seq = 0
    try:
        for message in placed.pop(0, []):
            seq += 1
            _write(writer, seq, session or 1, message, 0)
        for record in records:
            if isinstance(record, EventRecord):
                event_info = dict(record.info)
                if isinstance(event_info.get("seq"), int):
                    event_info["seq"] = numbers.get(event_info["seq"], seq + 1)
                writer.event(*record._replace(info=event_info))
                continue
            if record.seq in replaced:
                continue
            seq += 1
            numbers[record.seq] = seq
            writer.message(*record._replace(seq=seq))
            for message in placed.pop(record.seq, []):
                seq += 1
                _write(writer, seq, record.session, message, record.mono_ns, record.wall_ns)
    finally:
        writer.close()
    return path


def _write(
    writer: TraceWriter, seq: int, session: int, message: Message, mono_ns: int, wall_ns: int = 0
) -> None:
    writer.message(
        seq, mono_ns, wall_ns, session, str(message.channel), str(Side.BACKEND),
        message.raw, message.fds,
    )  # fmt: skip
