"""Oracles: what one iteration's run says about the back-end, and its signature.

In order of weight:

* **crash**: the program died by a signal (SIGSEGV, SIGABRT from abort() or a failed
  assert(), SIGBUS...);
* **panic**: it wrote a panic, a failed assertion, a sanitizer report or an uncaught
  exception to its output (it may have survived, or exited with a status);
* **hang**: a reply it owed (the live conversation's verdict) did not come within the
  timeout while it stayed alive and connected;
* **violation**: it said something against the spec (an error finding of the
  conversation checks on one of its messages).

Anything else is correct behaviour: the conversation went through (``ok``), the
program closed the connection on bad input (``disconnect``: that is how a back-end
should refuse), or it exited with a status and no panic text (``exit``). The signature
(the kind; the signal and the panic text with numbers blanked; the request a hang
waited for; the violation's text) deduplicates findings and is what minimization keeps:
not the request a crash happened after, which depends on how far the sender got before
the program died. Pure: no I/O.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field

PANIC_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"panicked at",
        r"[Aa]ssertion [`'\"]?.*[`'\"]? failed",
        r"assertion failed",
        r"AddressSanitizer|LeakSanitizer|MemorySanitizer|ThreadSanitizer",
        r"UndefinedBehaviorSanitizer|runtime error:",
        r"stack smashing detected",
        r"\*\*\* .* \*\*\*: terminated",
        r"double free|free\(\): invalid|malloc\(\): |corrupted size vs\. prev_size",
        r"Traceback \(most recent call last\)",
        r"Segmentation fault|core dumped",
    )
)

FINDING_KINDS = ("crash", "panic", "hang", "violation")
CORRECT_KINDS = ("ok", "disconnect", "exit")


@dataclass
class SessionRun:
    """How one connection of a case went."""

    ending: str
    last_sent: str | None = None
    """The request name of the last message that went out."""
    waited_for: str | None = None
    violations: list[str] = field(default_factory=list)
    sent: int = 0
    received: int = 0


@dataclass
class Run:
    """Everything one case's run produced that the oracles look at."""

    sessions: list[SessionRun]
    exit_status: int | None
    """None: still running; negative: killed by that signal."""
    output: str = ""
    """What the program wrote during the run."""


@dataclass(frozen=True)
class Verdict:
    kind: str
    signature: str
    detail: str

    @property
    def finding(self) -> bool:
        return self.kind in FINDING_KINDS


def panic_line(output: str) -> str | None:
    for line in output.splitlines():
        if any(p.search(line) for p in PANIC_PATTERNS):
            return line.strip()
    return None


def normalize(text: str) -> str:
    """Text with numbers and addresses blanked, for signatures."""
    text = re.sub(r"0x[0-9a-fA-F]+", "0x_", text)
    text = re.sub(r"#\d+", "#_", text)
    return re.sub(r"\d+", "_", text)[:160]


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def judge(run: Run) -> Verdict:
    last = next((s for s in reversed(run.sessions) if s.last_sent), None)
    at = last.last_sent if last else "start"
    status = run.exit_status
    panic = panic_line(run.output)
    if status is not None and status < 0:
        name = signal_name(-status)
        detail = f"killed by {name} after {at}"
        signature = f"crash {name}"
        if panic:
            detail += f": {panic}"
            signature += f": {normalize(panic)}"
        return Verdict("crash", signature, detail)
    if panic:
        return Verdict("panic", f"panic {normalize(panic)}", f"after {at}: {panic}")
    for session in run.sessions:
        if session.ending == "hang":
            what = session.waited_for or at
            return Verdict("hang", f"hang {what}", f"no reply to {what} within the timeout")
    for session in run.sessions:
        if session.violations:
            text = session.violations[0]
            return Verdict("violation", f"violation {normalize(text)}", text)
    if status is not None:
        return Verdict("exit", f"exit {status}", f"exited with status {status} after {at}")
    endings = {s.ending for s in run.sessions}
    if endings & {"closed", "send-failed"}:
        return Verdict("disconnect", f"disconnect at {at}", f"closed the connection after {at}")
    return Verdict("ok", "ok", "the conversation went through")
