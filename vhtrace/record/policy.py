"""What the relay decides about a message before it forwards it: pure, no sockets.

For each whole message read on a vhost-user channel the relay asks :meth:`Policy.decide`:

* ``--strict``: is it malformed (an error finding of the conversation)? Then the
  session is dropped instead of the message being forwarded;
* does its fd open a channel the relay must sit in the middle of (the back-end
  channel, the GPU socket, the device-state pipe: ``RequestSpec.opens``)? Is that fd
  of the kind the channel needs? A wrong one is relayed as it came, with a finding
  (``--strict``: the session is dropped);
* does a ``before:NAME`` snapshot want it held until the snapshot is taken?

The relay then acts on the :class:`Decision`; this module only reads the protocol table,
the conversation and the fd's description it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vhtrace.memory import triggers
from vhtrace.protocol import channels, spec
from vhtrace.protocol.connection import Connection
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Channel, Side


@dataclass(frozen=True, slots=True)
class Decision:
    drop: str = ""
    """Not '': drop the session (--strict), for this reason."""
    interpose: str | None = None
    """The channel whose fd the relay replaces by its own, to relay it."""
    wrong_fd: str = ""
    """Not '': the channel fd is not what the channel needs; relayed as it came."""
    hold: bool = False
    """Keep the message back until its before:NAME snapshot is taken."""


FORWARD = Decision()


def opens(channel: str, sender: Side, frame: Frame) -> str | None:
    """The channel this message's fd opens and the relay interposes, if any."""
    if channel != Channel.MAIN.value or len(frame.fds) != 1:
        return None
    row = spec.request_spec(Channel.MAIN, frame.request)
    if row is None or row.opens is None:
        return None
    if row.opens in ("backend", "gpu") and (
        frame.flags & spec.FLAG_REPLY or sender is not Side.FRONTEND
    ):
        return None
    return row.opens


class Policy:
    """The relay's rules for one ``vhtrace record``: strict or not, which messages hold."""

    def __init__(self, strict: bool = False, hold: triggers.Triggers | None = None) -> None:
        self.strict = strict
        self.hold = hold

    @property
    def forwards_plain_messages(self) -> bool:
        """True if every message without fds is simply forwarded (no --strict, no
        before:NAME trigger): the relay may then pass a burst of them on as one piece."""
        return not self.strict and (self.hold is None or not self.hold.before)

    def decide(
        self,
        connection: Connection | None,
        seq: int,
        channel: str,
        sender: Side,
        frame: Frame,
        fd_meta: Callable[[int], dict[str, Any]],
    ) -> Decision:
        """The decision for a whole message; ``fd_meta`` describes an fd (asked only for a
        channel-opening one); ``connection`` is the session's with --strict, which checks
        every message before it is forwarded."""
        if connection is not None:
            why = self.malformed(connection, seq, channel, sender, frame)
            if why:
                return Decision(drop=why)
        if not frame.fds and self.hold is None:
            return FORWARD  # only an fd opens a channel; only a trigger holds
        interpose = opens(channel, sender, frame)
        if interpose is not None:
            problem = channels.wrong_fd(interpose, fd_meta(frame.fds[0]))
            if problem is not None:
                if self.strict:
                    return Decision(drop=problem, wrong_fd=problem)
                return Decision(wrong_fd=problem, hold=self.holds(channel, sender, frame))
        hold = self.holds(channel, sender, frame)
        if interpose is None and not hold:
            return FORWARD
        return Decision(interpose=interpose, hold=hold)

    def holds(self, channel: str, sender: Side, frame: Frame) -> bool:
        """Does a before:NAME snapshot want this message held? (header only: cheap)"""
        if self.hold is None:
            return False
        trigger = triggers.before(self.hold, channel, sender.value, frame.request, frame.flags)
        return trigger is not None

    @staticmethod
    def malformed(
        connection: Connection, seq: int, channel: str, sender: Side, frame: Frame
    ) -> str:
        """--strict: the first error the conversation finds in the message, or ''."""
        analysis = connection.check(seq, Channel(channel), sender, frame)
        errors = [f for f in analysis.findings if f.severity is Severity.ERROR]
        return str(errors[0]) if errors else ""
