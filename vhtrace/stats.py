"""Aggregates of a trace: counts, sessions, features, a timeline, findings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vhtrace.analysis import AnalysedMessage, Item, LateFindings
from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.effects import Effect, RegionAdded, RingEnabled, RingStarted, RingStopped
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.payloads import human_size
from vhtrace.protocol.state import ConversationState
from vhtrace.trace.records import EventRecord, FindingRecord, StreamRecord

MILESTONES = {
    "SET_OWNER": "session owner set",
    "SET_PROTOCOL_FEATURES": "protocol features set",
    "SET_FEATURES": "features set",
    "SET_BACKEND_REQ_FD": "back-end channel passed",
    "SET_MEM_TABLE": "memory table",
    "SET_LOG_BASE": "dirty log (migration)",
    "SET_INFLIGHT_FD": "inflight area passed",
    "GET_INFLIGHT_FD": "inflight area asked",
    "POSTCOPY_ADVISE": "postcopy advised",
    "POSTCOPY_LISTEN": "postcopy listening",
    "POSTCOPY_END": "postcopy ended",
    "SET_DEVICE_STATE_FD": "device state transfer",
    "RESET_DEVICE": "device reset",
    "RESET_OWNER": "owner reset",
}


def _effect_milestone(effect: Effect) -> str | None:
    """The timeline line of what a message changed, if it makes one."""
    if isinstance(effect, RegionAdded):
        region = effect.region
        return (
            f"memory region gpa 0x{region.guest_phys_addr:x} "
            f"size {human_size(region.memory_size)} added"
        )
    if isinstance(effect, RingStarted):
        return f"ring {effect.index} started"
    if isinstance(effect, RingEnabled):
        return f"ring {effect.index} {'enabled' if effect.enabled else 'disabled'}"
    if isinstance(effect, RingStopped):
        return f"ring {effect.index} stopped at {effect.base}"
    return None


@dataclass
class SessionStats:
    session: int
    first_ns: int | None = None
    last_ns: int | None = None
    messages: int = 0
    start_info: dict[str, Any] = field(default_factory=dict)
    end_info: dict[str, Any] | None = None
    state: ConversationState | None = None
    timeline: list[tuple[int, int | None, str]] = field(default_factory=list)
    """(mono_ns, message number, what happened)."""
    _seen: set[str] = field(default_factory=set)

    def milestone(self, mono_ns: int, seq: int | None, text: str, once: str | None = None) -> None:
        if once is not None:
            if once in self._seen:
                return
            self._seen.add(once)
        self.timeline.append((mono_ns, seq, text))


_CONFIG_REQUESTS = ("GET_CONFIG", "SET_CONFIG")
_MILESTONE_NAMES = {*MILESTONES, *_CONFIG_REQUESTS}
"""Requests that may make a milestone without an effect (the rest are skipped at once)."""
_BACKEND = spec.Channel.BACKEND
_REQUEST, _REPLY, _POSTCOPY_ACK = Role.REQUEST, Role.REPLY, Role.POSTCOPY_ACK
"""As globals: an enum member read off its class is slow in Python 3.11 (once per message)."""


_SUMMARIES: dict[tuple[Any, ...], str] = {}
"""Config summaries by message bytes and context (decoding a device's config is slow, and
a trace of many sessions reads the same config in each)."""


def _summary(item: AnalysedMessage) -> str:
    analysis = item.analysis
    key = (item.record.raw, item.record.channel, analysis.role, analysis.name, analysis.layout,
           analysis.context)  # fmt: skip
    text = _SUMMARIES.get(key)
    if text is None:
        if len(_SUMMARIES) > 4096:
            _SUMMARIES.clear()
        text = _SUMMARIES[key] = analysis.summary()
    return text


@dataclass
class TraceStats:
    """Everything ``vhtrace stats`` prints, gathered in one pass."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(channel, request name) -> requests sent."""
    replies: Counter[tuple[str, str]] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    """channel -> messages."""
    stream_bytes: Counter[str] = field(default_factory=Counter)
    fds: Counter[str] = field(default_factory=Counter)
    sessions: dict[int, SessionStats] = field(default_factory=dict)
    findings: list[tuple[int, Finding]] = field(default_factory=list)
    inferred_devices: dict[int, tuple[str, str]] = field(default_factory=dict)
    """session -> (device, how) for devices told from the messages when the trace read
    (the ones the recorder knew are in the session-start event)."""
    first_ns: int | None = None
    last_ns: int | None = None
    count_requests: bool = True
    """False: no per-request, per-channel and fd counts (``vhtrace report`` does not show
    them, and counting is most of the cost per message)."""

    def session(self, number: int) -> SessionStats:
        if number not in self.sessions:
            self.sessions[number] = SessionStats(number)
        return self.sessions[number]

    def add(self, item: Item, conversations: dict[int, Any]) -> None:
        if isinstance(item, AnalysedMessage):
            self._message(item, conversations)
        elif isinstance(item, LateFindings):
            self.findings += [(item.session, f) for f in item.findings]
        elif isinstance(item, FindingRecord):
            self.findings.append((item.session, item.finding))
        elif isinstance(item, StreamRecord):
            self.stream_bytes[item.channel] += len(item.data)
        elif isinstance(item, EventRecord):
            self._event(item)

    def _time(self, mono_ns: int) -> None:
        if self.first_ns is None:
            self.first_ns = mono_ns
        self.last_ns = mono_ns

    def _event(self, record: EventRecord) -> None:
        self._time(record.mono_ns)
        session = self.session(record.session)
        if record.event == "session-start":
            session.start_info = dict(record.info)
        elif record.event == "session-end":
            session.end_info = dict(record.info)
        reason = record.info.get("reason")
        session.milestone(record.mono_ns, None, record.event + (f" ({reason})" if reason else ""))

    def _message(self, item: AnalysedMessage, conversations: dict[int, Any]) -> None:
        record, analysis = item.record, item.analysis
        mono_ns = record.mono_ns
        if self.first_ns is None:
            self.first_ns = mono_ns
        self.last_ns = mono_ns
        if self.count_requests:
            self.messages[record.channel] += 1
            key = (record.channel, analysis.name)
            if analysis.role is _REQUEST:
                self.requests[key] += 1
            else:
                self.replies[key] += 1
            for meta in record.fds:
                self.fds[str(meta.get("kind", "fd"))] += 1
        if analysis.findings:
            self.findings += [(record.session, f) for f in analysis.findings]
        session = self.sessions.get(record.session) or self.session(record.session)
        session.messages += 1
        if session.first_ns is None:
            session.first_ns = mono_ns
            session.milestone(mono_ns, record.seq, "first message")
        session.last_ns = mono_ns
        conversation = conversations.get(record.session)
        if conversation is not None:
            session.state = conversation.state
        self._milestones(session, item)

    @staticmethod
    def _milestones(session: SessionStats, item: AnalysedMessage) -> None:
        record, analysis = item.record, item.analysis
        name, role = analysis.name, analysis.role
        if record.channel == _BACKEND:
            session.milestone(
                record.mono_ns, record.seq, "first back-end channel message", once="backend-first"
            )
            if name == "CONFIG_CHANGE_MSG" and role is _REQUEST:
                session.milestone(record.mono_ns, record.seq, "the back-end's config changed")
            return
        effects = analysis.effects
        if not effects and role is not _POSTCOPY_ACK and name not in _MILESTONE_NAMES:
            return  # nearly every message: nothing to note
        fields = analysis.fields or {}
        if (
            name in _CONFIG_REQUESTS
            and (name == "GET_CONFIG") == (role is _REPLY)  # GET's reply, or SET
            and fields.get("device_config")
        ):
            # the device's own words: what the guest sees as disk size, MAC, tag, ...
            verb = "read" if name == "GET_CONFIG" else "written"
            session.milestone(record.mono_ns, record.seq, f"config {verb}: {_summary(item)}")
        if role is _REQUEST and name in MILESTONES:
            text = MILESTONES[name]
            if name == "SET_MEM_TABLE" and fields:
                text += f" ({fields['nregions']} regions)"
            session.milestone(record.mono_ns, record.seq, text)
        for effect in effects:
            text = _effect_milestone(effect)
            if text is not None:
                session.milestone(record.mono_ns, record.seq, text)
        if role is _POSTCOPY_ACK:
            session.milestone(record.mono_ns, record.seq, "postcopy memory table acked")
