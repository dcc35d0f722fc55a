"""A trace, cut into what one side says and what it waits for: the replay plan.

Replay plays one side of a recorded conversation (the front-end against a live
back-end, or the back-end against a live front-end). Per session the plan lists every
recorded message as a :class:`Step`: ours to send, or the peer's to expect and compare.

When may one of our messages go out? Where the protocol says a reply comes, the
recorded side waited for it, so a step of ours depends on

* every reply to an earlier message of ours that was recorded before it (which message
  answers which is the protocol model's verdict, ``Analysis.answers``: intrinsic
  replies, REPLY_ACK acks, the postcopy memory-table exchange);
* the message it answers, for a reply (and the postcopy ack, which answers the
  back-end's postcopy reply);
* for a back-end-channel request played as the back-end: its recorded point, the last
  front-end message recorded before it (such requests are the back-end's own idea).

Everything the peer sent spontaneously (a back-end-channel request while we play the
front-end) is expected but holds nothing up. A dependency on a message recorded
before is always satisfiable by a peer that behaves as recorded, so a faithful peer
never deadlocks a replay; one that does not is a divergence, reported as such.

Replies on a channel arrive in order, so a step needs only the latest reply of each
channel (keeps plans linear in the trace). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vhtrace.analysis import SESSION_END, AnalysedMessage, Item
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.spec import Channel, Side
from vhtrace.replay.compare import MessageView, view
from vhtrace.trace import format as fmt
from vhtrace.trace.records import EventRecord, StreamRecord

_CUT = fmt.MESSAGE_OVERSIZED | fmt.MESSAGE_INCOMPLETE


@dataclass(frozen=True, slots=True)
class Step:
    """One recorded message of a session, as the replay sees it."""

    seq: int
    session: int
    ours: bool
    """Ours to send (True) or the peer's to expect (False)."""
    raw: bytes
    """Header and payload exactly as recorded."""
    fds: tuple[dict, ...]
    """Metadata of the recorded fds (kind, size, name, dev/ino, ...)."""
    time: float
    """Seconds since the session's first message, as recorded."""
    answers: int | None
    deps: frozenset[int]
    """Peer messages (by seq) that must have arrived before this one of ours goes out."""
    view: MessageView

    @property
    def channel(self) -> Channel:
        return self.view.channel

    @property
    def sender(self) -> Side:
        return self.view.sender

    @property
    def label(self) -> str:
        """``#2 GET_FEATURES reply``."""
        return f"#{self.seq} {self.view.label}"

    @property
    def summary(self) -> str:
        text = f"{self.label} {self.view.summary}".rstrip()
        if self.fds:
            text += " fds=" + ",".join(str(m.get("kind", "other")) for m in self.fds)
        return text


@dataclass
class SessionPlan:
    """The steps of one recorded session, for the side being played."""

    session: int
    play: Side
    steps: list[Step] = field(default_factory=list)
    end_reason: str | None = None
    """How the recorded session ended (``frontend closed``, ``backend closed``, ...)."""
    peer_closes: bool = False
    """The recording ends with the peer closing the connection: expect it to."""
    we_close: bool = False
    """The recording ends with the played side closing the connection: do so."""
    notes: list[str] = field(default_factory=list)
    """Why the plan stops early, what it cannot reproduce."""
    streams: list[StreamRecord] = field(default_factory=list)
    """Bytes of the device-state and GPU channels, as recorded."""

    @property
    def ours(self) -> list[Step]:
        return [step for step in self.steps if step.ours]

    @property
    def theirs(self) -> list[Step]:
        return [step for step in self.steps if not step.ours]

    def stream_bytes(self, channel: str, sender: Side) -> bytes:
        """Everything recorded on a stream channel from one side."""
        return b"".join(
            s.data for s in self.streams if s.channel == channel and s.sender == sender.value
        )


class _Builder:
    """Collects one session's steps and works out their dependencies."""

    def __init__(self, session: int, play: Side, until: int | None) -> None:
        self.plan = SessionPlan(session, play)
        self.until = until
        self.first_ns: int | None = None
        self.ours_seen: set[int] = set()
        self.latest_reply: dict[Channel, int] = {}
        """Per channel, the latest peer reply to one of our messages."""
        self.latest_peer: dict[Channel, int] = {}
        self.closed = False
        """No more steps: cut short, or past --until."""
        self.cut_by_until = False

    def add(self, item: AnalysedMessage) -> None:
        if self.closed:
            return
        record, analysis = item.record, item.analysis
        if self.until is not None and record.seq > self.until:
            self.closed = self.cut_by_until = True
            return
        ours = item.wire.sender is self.plan.play
        if record.flags & _CUT:
            how = "oversized" if record.flags & fmt.MESSAGE_OVERSIZED else "cut short"
            self.plan.notes.append(
                f"#{record.seq} {analysis.name} was {how} in the recording: "
                "the replay stops before it"
            )
            self.closed = True
            return
        if ours and record.flags & fmt.MESSAGE_DROPPED:
            self.plan.notes.append(
                f"#{record.seq} {analysis.name} was dropped by the recorder (--strict), "
                "never delivered: the replay stops before it"
            )
            self.closed = True
            return
        if self.first_ns is None:
            self.first_ns = record.mono_ns
        channel = item.wire.channel
        deps: set[int] = set(self.latest_reply.values())
        if ours:
            if analysis.answers is not None and analysis.answers not in self.ours_seen:
                deps.add(analysis.answers)
            if (
                analysis.role is Role.REQUEST
                and channel is Channel.BACKEND
                and self.plan.play is Side.BACKEND
            ):
                deps.update(self.latest_peer.values())
            self.ours_seen.add(record.seq)
        else:
            deps = set()
            if analysis.answers is not None and analysis.answers in self.ours_seen:
                self.latest_reply[channel] = record.seq
            self.latest_peer[channel] = record.seq
        self.plan.steps.append(
            Step(
                record.seq,
                record.session,
                ours,
                record.raw,
                tuple(record.fds),
                (record.mono_ns - self.first_ns) / 1e9,
                analysis.answers,
                frozenset(deps),
                view(item.wire, analysis, record.fds),
            )
        )

    def end(self, reason: str | None) -> None:
        self.plan.end_reason = reason
        peer = self.plan.play.peer
        self.plan.peer_closes = reason == fmt.closed_by(peer.value) and not self.cut_by_until
        self.plan.we_close = reason == fmt.closed_by(self.plan.play.value) and not self.cut_by_until


def plan_sessions(
    items: Iterable[Item],
    play: Side,
    *,
    until: int | None = None,
    sessions: Iterable[int] | None = None,
) -> list[SessionPlan]:
    """The plans of a trace's sessions for the side played, in recorded order.

    ``until`` keeps messages up to that number; ``sessions`` keeps only those sessions.
    Sessions with no message left are dropped."""
    wanted = set(sessions) if sessions is not None else None
    builders: dict[int, _Builder] = {}
    order: list[int] = []

    def builder(session: int) -> _Builder | None:
        if wanted is not None and session not in wanted:
            return None
        if session not in builders:
            builders[session] = _Builder(session, play, until)
            order.append(session)
        return builders[session]

    for item in items:
        if isinstance(item, AnalysedMessage):
            found = builder(item.record.session)
            if found is not None:
                found.add(item)
        elif isinstance(item, StreamRecord):
            found = builder(item.session)
            if found is not None and not found.closed:
                found.plan.streams.append(item)
        elif isinstance(item, EventRecord) and item.event == SESSION_END:
            found = builders.get(item.session)
            if found is not None:
                reason = item.info.get("reason") if isinstance(item.info, dict) else None
                found.end(str(reason) if reason is not None else None)
    return [builders[s].plan for s in order if builders[s].plan.steps]
