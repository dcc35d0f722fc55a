"""QEMU with reconnect=1 through vhtrace record, the back-end restarted while the guest runs.

The back-end dies: the recorder records it, closes QEMU's side (as a dead back-end
would), QEMU reconnects, and the next connection is a new session in the same trace.
"""

from __future__ import annotations

import pytest

from tests.support import scenarios
from tests.support.tracecheck import Trace
from vhtrace.lab import Workspace


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_backend_restart_is_a_new_session(lab: Workspace) -> None:
    outcome = scenarios.backend_restart(lab)
    assert outcome.markers is not None
    assert outcome.markers["tick"] == "59", "the guest's I/O loop ran to its end"

    trace = Trace.read(outcome.trace)
    assert trace.problem is None, trace.problem
    assert len(trace.sessions()) >= 2, [e.event for e in trace.events()]
    ends = trace.events("session-end")
    assert ends[0].info["reason"] == "backend closed"
    second = trace.sessions()[1]
    resumed = [m for m in trace.named("SET_VRING_KICK") if m.record.session == second]
    assert resumed, "the second session set the ring up again"
    assert [str(f) for f in trace.findings("error")] == []
