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

from vhtrace.protocol import device_inference, peers, spec
from vhtrace.protocol.connection import recorded_view
from vhtrace.protocol.conversation import Analysis, Conversation, WireMessage
from vhtrace.protocol.device_inference import Inference
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.spec import Channel, DeviceType, Side
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
_CUT = fmt.MESSAGE_OVERSIZED | fmt.MESSAGE_INCOMPLETE
_SIDES = {s.value: s for s in Side}
_MAIN, _FRONTEND, _BACKEND = Channel.MAIN, Side.FRONTEND, Side.BACKEND
_GET_FEATURES = spec.lookup_request("GET_FEATURES")[1]  # type: ignore[index]
_GET_CONFIG = spec.lookup_request("GET_CONFIG")[1]  # type: ignore[index]
"""The defaults, as globals: an enum member read off its class is slow in Python 3.11."""

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
    reports (the recorder reads it off the peers' command lines) wins over the
    default, unless ``force`` (the user said --device). A session with neither gets
    one from the back-end's feature bits or the config size asked for, when they
    tell (:mod:`vhtrace.protocol.device_inference`); ``inferences`` says how."""

    def __init__(self, device: DeviceType | None = None, force: bool = False) -> None:
        self.device = device
        self.force = force
        self.conversations: dict[int, Conversation] = {}
        self._session_devices: dict[int, DeviceType] = {}
        self._session_frontends: dict[int, str] = {}
        self._guessing: set[int] = set()
        self.inferences: dict[int, Inference] = {}
        """Sessions whose device was inferred from their messages, and how."""

    def conversation(self, session: int) -> Conversation:
        conversation = self.conversations.get(session)
        if conversation is None:
            device = self.device if self.force else self._session_devices.get(session, self.device)
            frontend = self._session_frontends.get(session)
            conversation = self.conversations[session] = Conversation(device, frontend)
            if device is None:
                self._guessing.add(session)
        return conversation

    def _guess(self, session: int, conversation: Conversation, wire: WireMessage) -> None:
        """Infer the device from a GET_FEATURES reply or a GET_CONFIG request."""
        found = None
        if wire.channel is _MAIN and len(wire.payload) >= 8:
            if wire.request == _GET_FEATURES and wire.sender is _BACKEND:
                found = device_inference.from_features(int.from_bytes(wire.payload[:8], "little"))
            elif wire.request == _GET_CONFIG and wire.sender is _FRONTEND:
                offset, size = (
                    int.from_bytes(wire.payload[:4], "little"),
                    int.from_bytes(wire.payload[4:8], "little"),
                )
                found = device_inference.from_config_size(size) if offset == 0 else None
        if found is not None:
            conversation.state.set_device(found.device)
            self.inferences[session] = found

    def _note_session(self, record: EventRecord) -> None:
        """What the session-start event says of the peers: the device type, and who the
        front-end is (peers.frontend_of: the program the recorder saw)."""
        name = record.info.get("device") if isinstance(record.info, dict) else None
        if name:
            with contextlib.suppress(ValueError):
                self._session_devices[record.session] = DeviceType(str(name))
        frontend = peers.frontend_of(record.info)
        if frontend is not None:
            self._session_frontends[record.session] = frontend

    def message(self, record: MessageRecord) -> AnalysedMessage:
        """The analysis of one message record (every message of a trace comes this way)."""
        seq, _, _, session, channel, sender, raw, fds, record_flags = record
        wire = recorded_view(
            seq,
            _CHANNELS.get(channel, _MAIN),
            _SIDES.get(sender, _FRONTEND),
            raw,
            len(fds),
            record_flags & _CUT,
        )
        conversation = self.conversations.get(session) or self.conversation(session)
        if self._guessing and session in self._guessing:
            if conversation.state.device is None:
                self._guess(session, conversation, wire)
            if conversation.state.device is not None:
                self._guessing.discard(session)
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
        message = self.message
        for record in records:
            if type(record) is MessageRecord:
                yield message(record)
            else:
                yield from self.feed(record)
        yield from self.finish()
