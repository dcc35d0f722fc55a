"""The recorder's CPU priority: out of the relay's way, yet never starved.

The recorder decodes, snapshots and writes; the relay only forwards. Run SCHED_IDLE, the
recorder never delays the relay or the peers (a woken task always preempts it; a nice
value alone does not: the scheduler lets a niced task finish its slice first). But
SCHED_IDLE gets almost no CPU while every CPU is busy (two CPU-bound tasks on a 2-CPU
machine: a TCG guest, a build): the recorder then writes nothing, for as long as the
load lasts, and a trace stopped then is empty. So with ``auto`` the relay watches it
(:class:`StarvationWatch`): a recorder that is behind and spends its time waiting for
a CPU is raised to SCHED_OTHER (its nice value RECORDER_NICE above the relay's) until
it has caught up.

Leaving SCHED_IDLE needs CAP_SYS_NICE or an RLIMIT_NICE that allows the nice value;
without either, ``auto`` runs the recorder SCHED_OTHER (niced) from the start, since
a recorder that could not be raised again could lose the whole trace.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path

PRIORITIES = ("auto", "idle", "normal")
"""``auto`` (default): SCHED_IDLE, raised while starved (where it may be; else normal).
``idle``: SCHED_IDLE always (a starved recorder falls behind: records queue in the
relay, up to the link's limit, then are dropped and said to be). ``normal``:
SCHED_OTHER, niced, always. In every mode the relay raises it at the stop if it may."""
RECORDER_NICE = 5
CAP_SYS_NICE = 23
BEHIND_FOR = 0.05
"""How long the recorder may be behind before the watch asks whether it is starved."""
STARVED_SHARE = 0.5
"""Starved: it waited for a CPU at least this share of the time it was behind."""


def recorder_nice() -> int:
    """The recorder's nice value: RECORDER_NICE above the relay's (it gives way)."""
    return min(19, os.nice(0) + RECORDER_NICE)


def may_raise(status: str | None = None, nice_limit: int | None = None) -> bool:
    """Whether this process (and so a child it forks) may move a SCHED_IDLE task back to
    its nice value (recorder_nice): CAP_SYS_NICE in its effective set, or a hard
    RLIMIT_NICE that allows that nice value (the kernel's rule: 20 - nice <= RLIMIT_NICE)."""
    if status is None:
        with contextlib.suppress(OSError):
            status = Path("/proc/self/status").read_text()
    for line in (status or "").splitlines():
        if line.startswith("CapEff:") and int(line.split()[1], 16) >> CAP_SYS_NICE & 1:
            return True
    if nice_limit is None:
        nice_limit = resource.getrlimit(resource.RLIMIT_NICE)[1]
    return nice_limit == resource.RLIM_INFINITY or nice_limit >= 20 - recorder_nice()


def lower_self(priority: str, can_raise: bool) -> None:
    """Give this process (the recorder's) its priority (PRIORITIES).

    The nice value comes first: leaving SCHED_IDLE later keeps it. The soft RLIMIT_NICE
    goes up to the hard one: the kernel reads the soft one when the relay raises it."""
    with contextlib.suppress(OSError):
        os.nice(RECORDER_NICE)
    if priority == "idle" or (priority == "auto" and can_raise):
        with contextlib.suppress(OSError, ValueError):
            hard = resource.getrlimit(resource.RLIMIT_NICE)[1]
            resource.setrlimit(resource.RLIMIT_NICE, (hard, hard))
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def set_idle(pid: int, idle: bool) -> bool:
    """Move ``pid`` to SCHED_IDLE or back to SCHED_OTHER (its nice value kept)."""
    policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
    try:
        os.sched_setscheduler(pid, policy, os.sched_param(0))
    except OSError:
        return False
    return True


def is_runnable(pid: int) -> bool:
    """Whether ``pid`` is running or waiting for a CPU (it has work), not asleep."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].startswith("R")


def run_queue_wait(pid: int) -> int | None:
    """Nanoseconds ``pid`` has spent runnable but waiting for a CPU (None: not known)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class StarvationWatch:
    """Decides, from what the relay sees, when to raise the recorder and lower it again.

    Pure: fed the time, whether the recorder is behind (records it has not read yet, or
    it is runnable: it has read them and not yet recorded them) and its run-queue wait
    so far; answers "raise", "lower" or None."""

    behind_for: float = BEHIND_FOR
    starved_share: float = STARVED_SHARE
    raised: bool = False
    times_raised: int = 0
    _since: float | None = None
    _wait_then: int | None = None

    def observe(self, now: float, behind: bool, wait_ns: int | None) -> str | None:
        if not behind:
            self._since = None
            if self.raised:
                self.raised = False
                return "lower"
            return None
        if self._since is None or self.raised:
            self._since, self._wait_then = now, wait_ns
            return None
        elapsed = now - self._since
        if elapsed < self.behind_for:
            return None
        starved = (
            wait_ns is None
            or self._wait_then is None
            or wait_ns - self._wait_then >= self.starved_share * elapsed * 1e9
        )
        self._since, self._wait_then = now, wait_ns  # a new window
        if not starved:
            return None  # busy (a snapshot), not starved: it has the CPU it wants
        self.raised = True
        self.times_raised += 1
        return "raise"
