"""vhtrace record with real QEMU and mockbackend as the back-end: what QSD cannot show.

qemu-storage-daemon only listens and breaks postcopy on QEMU 7.2; mockbackend connects
as a client (the recorder's second topology) and takes part in a whole postcopy
migration, so these traces hold what the other real back-ends here cannot produce.
"""

from __future__ import annotations

import pytest

from tests.support import scenarios
from tests.support.tracecheck import Trace
from vhtrace.lab import Workspace


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel")
def test_qemu_listens_and_the_backend_connects_to_the_recorder(lab: Workspace) -> None:
    outcome = scenarios.frontend_listens(lab)
    assert outcome.markers is not None
    assert outcome.markers["md5"] == outcome.notes["image_md5"]
    trace = Trace.read(outcome.trace)
    assert trace.problem is None, trace.problem
    assert trace.header["topology"] == "backend-connects"
    start = trace.events("session-start")[0]
    assert start.info.get("device") == "blk"
    assert trace.named("SET_VRING_KICK") and trace.named("GET_VRING_BASE", role="reply")
    assert [str(f) for f in trace.findings("error")] == []


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel", "userfaultfd")
def test_whole_postcopy_sequence_with_set_mem_table(lab: Workspace) -> None:
    outcome = scenarios.postcopy_mock(lab)
    migration = outcome.notes["migration"]
    assert migration.status == "completed", migration.info  # type: ignore[attr-defined]
    trace = Trace.read(outcome.trace)
    assert trace.problem is None, trace.problem
    advise = trace.named("POSTCOPY_ADVISE", role="reply")
    assert advise and advise[0].record.fds[0]["kind"] == "userfaultfd"
    listen = trace.named("POSTCOPY_LISTEN")[0].record.seq
    tables = [m for m in trace.messages
              if m.analysis.name == "SET_MEM_TABLE" and m.record.seq > listen]  # fmt: skip
    roles = [m.analysis.role for m in tables]
    assert roles[:3] == ["request", "reply", "postcopy-ack"], roles
    request, reply, ack = tables[:3]
    assert reply.analysis.answers == request.record.seq
    assert reply.wire.size == request.wire.size  # QEMU requires the same size
    asked = [r["guest_phys_addr"] for r in request.analysis.fields["regions"]]
    answered = [r["guest_phys_addr"] for r in reply.analysis.fields["regions"]]
    assert asked == answered
    assert ack.wire.size == 8 and ack.analysis.fields["value"] == 0
    assert trace.named("POSTCOPY_END") and trace.named("POSTCOPY_END", role="reply")
    assert [str(f) for f in trace.findings("error")] == []
