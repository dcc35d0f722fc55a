"""Trace records in, analysed messages out: one Conversation per session.

The glue between the trace reader and the protocol model, shared by
``show``, ``stats``, export and replay. Findings about the wire are computed
here from the messages (so a newer vhtrace finds more in an old trace); the
trace's own finding records add what only the recorder saw (transport).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vhtrace.protocol.conversation import CUT_HEADER, Analysis, Conversation, WireMessage
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.framing import unpack_header
from vhtrace.protocol.spec import HEADER_SIZE, Channel, DeviceType, Side
from vhtrace.trace import format as fmt
from vhtrace.trace.records import (
    EndRecord,
    EventRecord,
    FindingRecord,
    MessageRecord,
    Record,
    StreamRecord,
)

_CHANNELS = {c.value: c for c in Channel}
_new_tuple = tuple.__new__
_CUT = fmt.MESSAGE_OVERSIZED | fmt.MESSAGE_INCOMPLETE
_SIDES = {s.value: s for s in Side}

SESSION_START = "session-start"
SESSION_END = "session-end"


@dataclass(slots=True)
class AnalysedMessage:
    record: MessageRecord
    wire: WireMessage
    """The header fields, decoded once."""
    analysis: Analysis


@dataclass(slots=True)
class LateFindings:
    """Findings known only later (a reply never came): reported when the session ends."""

    session: int
    findings: list[Finding]


Item = AnalysedMessage | EventRecord | FindingRecord | StreamRecord | EndRecord | LateFindings


def wire_message(record: MessageRecord) -> WireMessage:
    """The protocol model's view of a recorded message."""
    raw = record.raw
    if len(raw) >= HEADER_SIZE:
        request, flags, size = unpack_header(raw)
        complete = len(raw) == HEADER_SIZE + size and not record.flags & _CUT
    else:  # the stream ended inside the header: size says how much of it came
        request, flags, size = CUT_HEADER, 0, len(raw)
        complete = False
    return _new_tuple(
        WireMessage,
        (
            record.seq,
            _CHANNELS.get(record.channel, Channel.MAIN),
            _SIDES.get(record.sender, Side.FRONTEND),
            request,
            flags,
            size,
            raw[HEADER_SIZE:],
            len(record.fds),
            complete,
        ),
    )


def device_of(header: dict[str, object], override: str | None = None) -> DeviceType | None:
    """The default device type to name virtio bits by: the user's choice, else the trace's."""
    name = override or header.get("device")
    try:
        return DeviceType(str(name)) if name else None
    except ValueError:
        return None


def analyser_for(header: dict[str, object], override: str | None = None) -> Analyser:
    """An Analyser for a trace: --device forces a device type, else each session's own."""
    return Analyser(device_of(header, override), force=override is not None)


class Analyser:
    """Feeds records to per-session conversations.

    The device type names virtio feature bits: the one a session-start event
    reports (the recorder reads it off QEMU's command line) wins over the
    default, unless ``force`` (the user said --device)."""

    def __init__(self, device: DeviceType | None = None, force: bool = False) -> None:
        self.device = device
        self.force = force
        self.conversations: dict[int, Conversation] = {}
        self._session_devices: dict[int, DeviceType] = {}

    def conversation(self, session: int) -> Conversation:
        conversation = self.conversations.get(session)
        if conversation is None:
            device = self.device if self.force else self._session_devices.get(session, self.device)
            conversation = self.conversations[session] = Conversation(device)
        return conversation

    def _note_session(self, record: EventRecord) -> None:
        name = record.info.get("device") if isinstance(record.info, dict) else None
        if name:
            with contextlib.suppress(ValueError):
                self._session_devices[record.session] = DeviceType(str(name))

    def message(self, record: MessageRecord) -> AnalysedMessage:
        wire = wire_message(record)
        conversation = self.conversations.get(record.session) or self.conversation(record.session)
        return AnalysedMessage(record, wire, conversation.analyse(wire))

    def feed(self, record: Record) -> Iterator[Item]:
        if type(record) is MessageRecord:
            yield self.message(record)
        elif isinstance(record, EventRecord) and record.event == SESSION_END:
            yield record
            yield from self._close(record.session)
        elif isinstance(record, EventRecord) and record.event == SESSION_START:
            self._note_session(record)
            yield record
        elif isinstance(record, EndRecord):
            for session in list(self.conversations):
                yield from self._close(session, "the recording stopped")
            yield record
        else:
            yield record

    def finish(self) -> Iterator[Item]:
        """The trace ended (maybe without its end record): close what is open."""
        for session in list(self.conversations):
            yield from self._close(session, "the trace ended")

    def _close(self, session: int, why: str = "the connection closed") -> Iterator[LateFindings]:
        conversation = self.conversations.pop(session, None)
        if conversation is None:
            return
        findings = conversation.close(why)
        if findings:
            yield LateFindings(session, findings)

    def run(self, records: Iterable[Record]) -> Iterator[Item]:
        for record in records:
            if type(record) is MessageRecord:
                yield self.message(record)
            else:
                yield from self.feed(record)
        yield from self.finish()
