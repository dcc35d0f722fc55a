"""What a replay found: divergences, per-message checks, results, and how they read.

A divergence names the session, the recorded message number and request, each field
that differs with its recorded and live value, and the recorded message closest to
what came live (vcrpy's "similar request found"), so that a CI log says what changed
without opening the trace. :mod:`vhtrace.replay.formats` writes the same data as JSON
and JUnit XML. Pure: no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from vhtrace.replay.compare import Alternative, Difference

EXIT_SAME = 0
EXIT_DIVERGED = 1
EXIT_UNUSABLE = 2


class Kind(enum.StrEnum):
    """What sort of divergence."""

    MISMATCH = "mismatch"
    """A live message where a recorded one was expected, with different content."""
    NOT_IN_TRACE = "not-in-trace"
    """A live message the recording does not have at all."""
    CLOSED = "closed"
    """The peer closed the connection before the recording says it did."""
    STILL_OPEN = "still-open"
    """The recording ends with the peer closing; live, it did not."""
    TIMEOUT = "timeout"
    """A message the recording has did not come in time."""
    SEND_FAILED = "send-failed"
    """One of our messages could not be sent (the peer was gone, no channel)."""


class Status(enum.StrEnum):
    OK = "ok"
    DIVERGED = "diverged"
    NOT_REACHED = "not reached"
    HANDLED = "handled"
    """A live message not in the recording, answered by the --unknown policy."""


@dataclass
class Divergence:
    """Where the live peer stopped behaving as recorded."""

    kind: Kind
    session: int
    seq: int | None
    """The recorded message it is about (None: no recorded message is)."""
    where: str
    """``#2 GET_FEATURES reply``, or ``live GET_STATUS`` for a message not in the trace."""
    headline: str
    differences: list[Difference] = field(default_factory=list)
    expected: str | None = None
    """The recorded message, one line."""
    live: str | None = None
    """The live message, one line."""
    closest: Alternative | None = None
    searched: bool = False
    """The recording was searched for an alternative (even if none was found)."""

    def lines(self) -> list[str]:
        """The report, one line each, without indentation."""
        out = [self.headline]
        if self.expected:
            out.append(f"recorded: {self.expected}")
        if self.live:
            out.append(f"live:     {self.live}")
        for diff in self.differences:
            out.append(f"  {diff.field}: recorded {diff.recorded}, live {diff.live}")
            if diff.note:
                out.append(f"  {' ' * len(diff.field)}  {diff.note}")
        if self.closest is not None:
            out.append(f"closest recorded alternative: {self.closest.describe()}")
        elif self.searched:
            out.append(
                "closest recorded alternative: none (no other recorded message of that request)"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "session": self.session,
            "seq": self.seq,
            "where": self.where,
            "headline": self.headline,
            "differences": [d.to_dict() for d in self.differences],
            "expected": self.expected,
            "live": self.live,
            "closest": self.closest.to_dict() if self.closest else None,
        }


@dataclass
class Check:
    """One recorded message of the peer (or the session's end), and how it went live."""

    session: int
    seq: int | None
    label: str
    status: Status = Status.NOT_REACHED
    ignored: list[Difference] = field(default_factory=list)
    """Differences the rules excused, with their reasons."""
    divergence: Divergence | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "session": self.session,
            "seq": self.seq,
            "label": self.label,
            "status": str(self.status),
        }
        if self.ignored:
            out["ignored"] = [d.to_dict() for d in self.ignored]
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class SessionResult:
    session: int
    checks: list[Check] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    planned: int = 0
    """Recorded messages in the plan (both sides)."""
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    """What the protocol model says about the live peer's messages."""
    interrupted: bool = False
    """Stopped (SIGINT, SIGTERM) before the recorded session was played to its end."""
    unanswered: list[str] = field(default_factory=list)
    """Main-channel requests still owed a reply when the session ended (serving: replies
    we never sent; the live conversation's verdict)."""

    @property
    def diverged(self) -> bool:
        return bool(self.divergences)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "result": "diverged"
            if self.diverged
            else "interrupted"
            if self.interrupted
            else "same",
            "planned": self.planned,
            "sent": self.sent,
            "received": self.received,
            "elapsed": round(self.elapsed, 6),
            "divergences": [d.to_dict() for d in self.divergences],
            "checks": [c.to_dict() for c in self.checks],
            "notes": self.notes,
            "findings": self.findings,
        }


@dataclass
class ReplayResult:
    """The outcome of replaying a trace: exit code 0 same, 1 diverged, 2 unusable."""

    trace: str
    play: str
    """``frontend`` (against a live back-end) or ``backend`` (serving a live front-end)."""
    peer: str
    """The live peer's socket."""
    sessions: list[SessionResult] = field(default_factory=list)
    error: str | None = None
    """Why the replay could not be done (bad trace, no peer): exit code 2."""
    notes: list[str] = field(default_factory=list)

    @property
    def divergences(self) -> list[Divergence]:
        return [d for s in self.sessions for d in s.divergences]

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_UNUSABLE
        if self.divergences:
            return EXIT_DIVERGED
        if any(s.interrupted for s in self.sessions):
            return EXIT_UNUSABLE  # nothing diverged, but not everything was played
        return EXIT_SAME

    @property
    def verdict(self) -> str:
        if self.error is None and not self.divergences and self.exit_code == EXIT_UNUSABLE:
            return "interrupted"
        return {EXIT_SAME: "same", EXIT_DIVERGED: "diverged", EXIT_UNUSABLE: "unusable"}[
            self.exit_code
        ]

    @property
    def elapsed(self) -> float:
        return sum(s.elapsed for s in self.sessions)

    @property
    def messages(self) -> int:
        """Messages that crossed the wire (sent and received)."""
        return sum(s.sent + s.received for s in self.sessions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "play": self.play,
            "peer": self.peer,
            "result": self.verdict,
            "exit_code": self.exit_code,
            "error": self.error,
            "elapsed": round(self.elapsed, 6),
            "messages": self.messages,
            "divergences": [d.to_dict() for d in self.divergences],
            "sessions": [s.to_dict() for s in self.sessions],
            "notes": self.notes,
        }


def headline(result: ReplayResult) -> str:
    """The one line that says what went wrong, first in a test failure so that ``-q``,
    ``--tb=line`` and pytest's short summary show it: ``#2 GET_FEATURES reply: live sets RO
    (bit 5)``."""
    if result.error is not None:
        return f"vhtrace replay unusable: {result.error}"
    divergences = result.divergences
    if not divergences:
        return f"vhtrace replay: {result.verdict}, exit {result.exit_code}"
    first = divergences[0]
    if first.differences:
        diff = first.differences[0]
        what = diff.note or f"{diff.field}: recorded {diff.recorded}, live {diff.live}"
        text = f"{first.where}: {what}"
    else:
        text = first.headline
    more = len(divergences) - 1
    return text + (f" (and {more} more divergence{'s' if more != 1 else ''})" if more else "")


def render_text(result: ReplayResult, *, verbose: bool = False) -> list[str]:
    """The human report: one block per session, divergences in full, a verdict line."""
    role = "the front-end" if result.play == "frontend" else "the back-end"
    peer = "back-end" if result.play == "frontend" else "front-end"
    out = [f"vhtrace replay: {result.trace} as {role}, live {peer} at {result.peer}"]
    out += [f"  note: {note}" for note in result.notes]
    if result.error is not None:
        out.append(f"unusable: {result.error}")
        return out
    for session in result.sessions:
        ok = sum(1 for c in session.checks if c.status is Status.OK)
        compared = sum(1 for c in session.checks if c.status is not Status.NOT_REACHED)
        state = "DIVERGED" if session.diverged else "INTERRUPTED" if session.interrupted else "same"
        out.append(
            f"session {session.session}: {state}: {session.sent} sent, {session.received} "
            f"received of {session.planned} recorded; {ok}/{compared} checks matched "
            f"in {session.elapsed:.3f} s"
        )
        out += [f"  note: {note}" for note in session.notes]
        for divergence in session.divergences:
            lines = divergence.lines()
            out.append(f"  {lines[0]}")
            out += [f"    {line}" for line in lines[1:]]
        for check in session.checks:
            if check.status is Status.HANDLED:
                out.append(f"  {check.label}: {check.note}")
            if verbose and check.status is not Status.NOT_REACHED:
                out.append(f"  {check.status:>11}  {check.label}")
            if check.ignored and (verbose or check.status is Status.DIVERGED):
                for diff in check.ignored:
                    out.append(
                        f"    ignored {diff.field}: recorded {diff.recorded}, live {diff.live}"
                        f" ({diff.ignored})"
                    )
        if verbose:
            out += [f"  live finding: {text}" for text in session.findings]
    total = len(result.divergences)
    out.append(
        f"result: {result.verdict} ({total} divergence{'s' if total != 1 else ''}, "
        f"{result.messages} messages in {result.elapsed:.3f} s), exit {result.exit_code}"
    )
    return out
