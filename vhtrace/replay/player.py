"""The replay's state machine: what to send next, and whether what came is what was recorded.

Theory of operation
-------------------
A :class:`Player` runs one :class:`~vhtrace.replay.plan.SessionPlan` without touching a
socket, in the manner of h11: the I/O loop asks :meth:`Player.next_send` for the next
message of ours whose dependencies have arrived, tells :meth:`Player.sent` once it went
out, and hands every live message of the peer to :meth:`Player.receive`, which says
whether it was the expected one (:class:`Outcome`), with the differences the rules
excused, or a :class:`~vhtrace.replay.report.Divergence`.

Which recorded message a live one is compared with:

* strict (the default): the next expected message of the peer on that channel. A live
  message that differs from it is a mismatch, reported against it, with the closest
  recorded alternative from the whole session;
* loose (``--loose``): the first still-expected message on that channel with the same
  request whose content matches; failing that, the closest one with that request.

Either way, a live message whose request the peer has no recorded message of (left) is
:attr:`Outcome.UNKNOWN`: the I/O side decides (as the back-end: the ``--unknown``
policy; as the front-end: always a divergence).

A divergence stops the session, except a mismatch under ``keep_going``: then the
recorded message counts as received and the replay goes on. The loop ends when all our
messages went out and every expected one came (:attr:`Player.finished`), when the peer
closed (:meth:`Player.peer_closed`), or when nothing came in time
(:meth:`Player.timed_out`).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from vhtrace.protocol.spec import FRAMED_CHANNELS, Channel
from vhtrace.replay.compare import Difference, MessageView, closest, compare, counted
from vhtrace.replay.plan import SessionPlan, Step
from vhtrace.replay.report import Check, Divergence, Kind, Status
from vhtrace.replay.rules import Rules


class Outcome(enum.StrEnum):
    MATCHED = "matched"
    DIVERGED = "diverged"
    UNKNOWN = "unknown"
    """Not in the recording: the caller's policy decides."""


@dataclass
class Received:
    """The verdict on one live message."""

    outcome: Outcome
    step: Step | None = None
    """The recorded message it matched or was compared with."""
    ignored: list[Difference] = field(default_factory=list)
    divergence: Divergence | None = None


class Player:
    """Plays one session of a plan; pure, driven by the I/O loop."""

    def __init__(
        self, plan: SessionPlan, rules: Rules, *, loose: bool = False, keep_going: bool = False
    ) -> None:
        self.plan = plan
        self.rules = rules
        self.loose = loose
        self.keep_going = keep_going
        self._ours: deque[Step] = deque(plan.ours)
        self._expected: dict[Channel, list[Step]] = {channel: [] for channel in FRAMED_CHANNELS}
        for step in plan.theirs:
            self._expected[step.channel].append(step)
        self._by_seq = {step.seq: step for step in plan.steps}
        self.arrived: set[int] = set()
        self.checks: dict[int, Check] = {
            step.seq: Check(plan.session, step.seq, step.label) for step in plan.theirs
        }
        self.extra_checks: list[Check] = []
        """Checks not tied to a recorded message: the end, live messages not in the trace."""
        self.divergences: list[Divergence] = []
        self.stopped = False
        self.sent_count = 0
        self.received_count = 0

    # -- sending -------------------------------------------------------------------

    def next_send(self) -> Step | None:
        """Our next message, if everything it waits for has arrived."""
        if self.stopped or not self._ours:
            return None
        step = self._ours[0]
        return step if step.deps <= self.arrived else None

    def sent(self, step: Step) -> None:
        """``step`` (the one next_send returned) went out."""
        assert self._ours and self._ours[0] is step
        self._ours.popleft()
        self.sent_count += 1

    def send_failed(self, step: Step, why: str) -> Divergence | None:
        if self.plan.peer_closes and not any(self._expected.values()):
            # The recording ends with the peer closing and nothing more came from it: what
            # we still had to send went out as it closed (the recorder saw it, the peer did
            # not read it), so failing to send it now is the recorded ending.
            peer = _peer(self.plan)
            self._end_check(Status.OK, f"the {peer} closed the connection, as recorded "
                            f"({len(self._ours)} of ours were never read by it)")  # fmt: skip
            self._ours.clear()
            self.stopped = True
            return None
        return self._stop(
            Divergence(
                Kind.SEND_FAILED,
                self.plan.session,
                step.seq,
                step.label,
                f"could not send {step.label}: {why}",
                expected=step.summary,
            )
        )

    # -- state ---------------------------------------------------------------------

    @property
    def done_sending(self) -> bool:
        return not self._ours

    @property
    def finished(self) -> bool:
        """Every message of ours went out and every expected one came."""
        return not self._ours and not any(self._expected.values())

    def waiting_for(self) -> Step | None:
        """The recorded message of the peer the replay waits for now, if any."""
        if self._ours:
            missing = sorted(self._ours[0].deps - self.arrived)
            if missing:
                return self._by_seq[missing[0]]
        pending = [steps[0] for steps in self._expected.values() if steps]
        return min(pending, key=lambda s: s.seq) if pending else None

    def expected_on(self, channel: Channel) -> int:
        """How many messages of the peer are still expected on a channel."""
        return len(self._expected[channel])

    def pending_sends_on(self, channel: Channel) -> int:
        return sum(1 for step in self._ours if step.channel is channel)

    # -- receiving -----------------------------------------------------------------

    def receive(self, live: MessageView) -> Received:
        """Judge one live message of the peer."""
        self.received_count += 1
        pending = self._expected[live.channel]
        same_request = [
            s for s in pending if (s.view.request, s.view.role) == (live.request, live.role)
        ]
        if self.loose:
            for step in same_request:
                differences = compare(step.view, live, self.rules)
                if not counted(differences):
                    return self._matched(step, differences)
            if not same_request:
                return self._unknown(live, pending)
            target = self._closest_step(live, same_request) or same_request[0]
        else:
            if not pending:
                return self._unknown(live, pending)
            target = pending[0]
            differences = compare(target.view, live, self.rules)
            if not counted(differences):
                return self._matched(target, differences)
            if not same_request:
                return self._unknown(live, pending)
        return self._mismatch(target, live)

    def _closest_step(self, live: MessageView, steps: list[Step]) -> Step | None:
        found = closest(live, [(s.seq, s.view) for s in steps], self.rules, near=steps[0].seq)
        return self._by_seq[found.seq] if found is not None else None

    def _matched(self, step: Step, differences: list[Difference]) -> Received:
        self._expected[step.channel].remove(step)
        self.arrived.add(step.seq)
        check = self.checks[step.seq]
        check.status, check.ignored = Status.OK, [d for d in differences if d.ignored]
        return Received(Outcome.MATCHED, step, check.ignored)

    def _mismatch(self, step: Step, live: MessageView) -> Received:
        differences = compare(step.view, live, self.rules)
        shown = counted(differences)
        alternatives = [(s.seq, s.view) for s in self.plan.theirs if s.seq != step.seq]
        if any(d.field == "request" for d in shown):
            headline = f"the live {_peer(self.plan)} sent {live.label} instead"
        else:
            fields = ", ".join(d.field for d in shown)
            headline = f"{fields} differ{'s' if len(shown) == 1 else ''}"
        divergence = Divergence(
            Kind.MISMATCH,
            self.plan.session,
            step.seq,
            step.label,
            f"diverged at {step.label}: {headline}",
            shown,
            step.summary,
            _live_line(live),
            closest(live, alternatives, self.rules, near=step.seq),
            searched=True,
        )
        check = self.checks[step.seq]
        check.status, check.divergence = Status.DIVERGED, divergence
        check.ignored = [d for d in differences if d.ignored]
        self.divergences.append(divergence)
        if self.keep_going and live.request == step.view.request:
            self._expected[step.channel].remove(step)
            self.arrived.add(step.seq)
        else:
            self.stopped = True
        return Received(Outcome.DIVERGED, step, check.ignored, divergence)

    def _unknown(self, live: MessageView, pending: list[Step]) -> Received:
        nxt = pending[0] if pending else None
        expected = (
            f"; expected {nxt.label}"
            if nxt
            else f"; nothing more was expected on the {live.channel} channel"
        )
        divergence = Divergence(
            Kind.NOT_IN_TRACE,
            self.plan.session,
            nxt.seq if nxt else None,
            f"live {live.label}",
            f"the live {_peer(self.plan)} sent {live.label}, which the recording "
            f"does not have{expected}",
            expected=nxt.summary if nxt else None,
            live=_live_line(live),
            closest=closest(live, [(s.seq, s.view) for s in self.plan.theirs], self.rules),
            searched=True,
        )
        return Received(Outcome.UNKNOWN, nxt, [], divergence)

    def not_in_trace(self, received: Received, *, handled: str | None) -> None:
        """The caller's decision on an UNKNOWN message: handled (with how) or a divergence."""
        assert received.divergence is not None
        divergence = received.divergence
        if handled is not None:
            self.extra_checks.append(
                Check(self.plan.session, None, divergence.where, Status.HANDLED, note=handled)
            )
            return
        self.extra_checks.append(
            Check(self.plan.session, None, divergence.where, Status.DIVERGED, divergence=divergence)
        )
        self._stop(divergence)

    # -- the end -------------------------------------------------------------------

    def peer_closed(self, channel: Channel = Channel.MAIN) -> Divergence | None:
        """The peer closed a channel; a divergence if the recording has more on it."""
        peer = _peer(self.plan)
        if channel is not Channel.MAIN:
            left = self.expected_on(channel) + self.pending_sends_on(channel)
            if not left:
                return None
            step = (self._expected[channel] or [s for s in self._ours if s.channel is channel])[0]
            return self._stop(
                Divergence(
                    Kind.CLOSED,
                    self.plan.session,
                    step.seq,
                    step.label,
                    f"the live {peer} closed the {channel} channel before {step.label}",
                    expected=step.summary,
                )
            )
        if self.finished:
            self._end_check(Status.OK, f"the {peer} closed the connection")
            return None
        pending = [steps[0] for steps in self._expected.values() if steps]
        step = min(pending, key=lambda s: s.seq) if pending else self._ours[0]
        missing = sum(len(v) for v in self._expected.values())
        divergence = Divergence(
            Kind.CLOSED,
            self.plan.session,
            step.seq,
            step.label,
            f"the live {peer} closed the connection before {step.label} "
            f"({missing} recorded message{'s' if missing != 1 else ''} of the {peer} "
            f"never came, {len(self._ours)} of ours not sent)",
            expected=step.summary,
        )
        self._end_check(Status.DIVERGED, divergence.headline, divergence)
        return self._stop(divergence)

    def still_open(self, waited: float) -> Divergence:
        """The recording ends with the peer closing; live it kept the connection open."""
        peer = _peer(self.plan)
        divergence = Divergence(
            Kind.STILL_OPEN,
            self.plan.session,
            None,
            "end of session",
            f"the recording ends with the {peer} closing the connection "
            f"({self.plan.end_reason}); the live {peer} kept it open for {waited:g} s",
        )
        self._end_check(Status.DIVERGED, divergence.headline, divergence)
        return self._stop(divergence)

    def timed_out(self, waited: float) -> Divergence:
        step = self.waiting_for()
        peer = _peer(self.plan)
        if step is None:
            headline = f"nothing happened for {waited:g} s"
        else:
            headline = f"waited {waited:g} s for {step.label} from the {peer}: it did not come"
        divergence = Divergence(
            Kind.TIMEOUT,
            self.plan.session,
            step.seq if step else None,
            step.label if step else "end of session",
            headline,
            expected=step.summary if step else None,
        )
        if step is not None and step.seq in self.checks:
            self.checks[step.seq].status = Status.DIVERGED
            self.checks[step.seq].divergence = divergence
        return self._stop(divergence)

    def _end_check(self, status: Status, note: str, divergence: Divergence | None = None) -> None:
        self.extra_checks.append(
            Check(
                self.plan.session, None, "end of session", status, note=note, divergence=divergence
            )
        )

    def _stop(self, divergence: Divergence) -> Divergence:
        if divergence not in self.divergences:
            self.divergences.append(divergence)
        self.stopped = True
        return divergence

    def all_checks(self) -> list[Check]:
        return sorted(self.checks.values(), key=lambda c: c.seq or 0) + self.extra_checks


def _peer(plan: SessionPlan) -> str:
    return "back-end" if plan.play.value == "frontend" else "front-end"


def _live_line(live: MessageView) -> str:
    text = f"{live.label} {live.summary}".rstrip()
    if live.fd_kinds:
        text += " fds=" + ",".join(live.fd_kinds)
    return text
