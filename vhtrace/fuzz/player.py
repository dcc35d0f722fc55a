"""The fuzzer's stand-in for the replay's Player: send the case, wait where a reply is owed.

The replay's :class:`~vhtrace.replay.session.SessionRunner` does the I/O (fds made by
kind, the back-end channel, the live :class:`~vhtrace.protocol.conversation.Conversation`
that every message goes through); it asks its player what to send and hands it what
came. A replay player compares with the recording; this one does not (a mutated
conversation has no recording to match). It releases the next message once no reply
is owed on the main channel (the live conversation's verdict, so a NEED_REPLY we set
without REPLY_ACK owes nothing), accepts every reply, and leaves back-end-channel
requests to the runner's ``unknown`` policy, which answers them as a front-end would.
How the session ended is :attr:`FuzzPlayer.ending`. Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

from vhtrace.protocol.conversation import Conversation, Role
from vhtrace.protocol.spec import Channel
from vhtrace.replay.compare import MessageView
from vhtrace.replay.plan import Step
from vhtrace.replay.player import Outcome, Received
from vhtrace.replay.report import Check, Divergence, Kind


class Ending(enum.StrEnum):
    DONE = "done"
    """Everything went out and every owed reply came; we hung up."""
    CLOSED = "closed"
    """The back-end closed the connection."""
    SEND_FAILED = "send-failed"
    """The back-end was gone when we sent."""
    HANG = "hang"
    """A reply was owed and did not come within the timeout."""
    STOPPED = "stopped"


class FuzzPlayer:
    """Plays a list of steps; the runner's ``conversation`` says what is owed."""

    def __init__(
        self,
        session: int,
        steps: Sequence[Step],
        *,
        on_sent: Callable[[Step], None] | None = None,
        cut_last: bool = False,
    ) -> None:
        self.session = session
        self._steps = list(steps)
        self._next = 0
        self.conversation: Conversation | None = None
        """Set by the driver to the runner's live conversation."""
        self.on_sent = on_sent
        self.cut_last = cut_last
        """The last message is cut short: once it is out we hang up, owed reply or not."""
        self.ending: Ending | None = None
        self.waited_for: str | None = None
        """The request whose reply never came (a hang)."""
        self.last_sent: Step | None = None
        self.divergences: list[Divergence] = []
        self.stopped = False
        self.sent_count = 0
        self.received_count = 0
        self.arrived: set[int] = set()

    def _owed(self) -> bool:
        return self.conversation is not None and bool(self.conversation.pending[Channel.MAIN])

    # -- the Player interface the session runner drives ---------------------------------

    def next_send(self) -> Step | None:
        if self.stopped or self._next >= len(self._steps) or self._owed():
            return None
        return self._steps[self._next]

    def sent(self, step: Step) -> None:
        self._next += 1
        self.sent_count += 1
        self.last_sent = step
        if self.on_sent is not None:
            self.on_sent(step)

    def send_failed(self, step: Step, why: str) -> Divergence | None:
        return self._end(Ending.SEND_FAILED, why)

    @property
    def finished(self) -> bool:
        if self._next >= len(self._steps) and self.cut_last:
            return True
        return self._next >= len(self._steps) and not self._owed()

    def receive(self, live: MessageView) -> Received:
        self.received_count += 1
        if live.channel is Channel.BACKEND and live.role == Role.REQUEST:
            divergence = Divergence(Kind.NOT_IN_TRACE, self.session, None, live.label, live.label)
            return Received(Outcome.UNKNOWN, None, [], divergence)
        return Received(Outcome.MATCHED)

    def not_in_trace(self, received: Received, *, handled: str | None) -> None:
        """A back-end-channel request: answered by the policy (or left unanswered)."""

    def peer_closed(self, channel: Channel = Channel.MAIN) -> Divergence | None:
        if channel is Channel.MAIN:
            return self._end(Ending.CLOSED, "the back-end closed the connection")
        return None

    def still_open(self, waited: float) -> Divergence:
        return self._end(Ending.DONE, "")

    def timed_out(self, waited: float) -> Divergence:
        pending = self.conversation.pending[Channel.MAIN] if self.conversation else ()
        if pending:
            self.waited_for = pending[0].row.name
            return self._end(Ending.HANG, f"no reply to {self.waited_for} in {waited:g} s")
        return self._end(Ending.DONE, "")

    def all_checks(self) -> list[Check]:
        return []

    def _end(self, ending: Ending, why: str) -> Divergence:
        if self.ending is None:
            self.ending = ending
        self.stopped = True
        return Divergence(Kind.CLOSED, self.session, None, str(ending), why)
