"""REM_MEM_REG as real QEMU 7.2 sends it (tests/fixtures/qemu-rem-mem-reg/README.md): no fd,
the region named by gpa, size and uaddr; no finding, and the conversation's memory table
follows the removals and additions."""

from __future__ import annotations

from pathlib import Path

from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.protocol.conversation import Role
from vhtrace.trace.reader import TraceReader

TRACE = Path(__file__).resolve().parents[1] / "fixtures" / "qemu-rem-mem-reg"
TRACE = TRACE / "qemu-qsd-ivshmem-toggle.vht"
BAR = 0xFE000000
"""Where the guest's firmware put the ivshmem BAR (2 MiB)."""


def analysed() -> list[AnalysedMessage]:
    with TraceReader(TRACE) as reader:
        items = list(analyser_for(reader.header).run(reader))
    return [i for i in items if isinstance(i, AnalysedMessage)]


def test_qemu_7_2_sends_rem_mem_reg_without_an_fd_and_nothing_is_flagged() -> None:
    messages = analysed()
    removals = [
        m for m in messages if m.analysis.name == "REM_MEM_REG" and m.analysis.role is Role.REQUEST
    ]
    assert len(removals) >= 2
    assert all(m.record.fds == () for m in removals)
    assert {m.analysis.fields["guest_phys_addr"] for m in removals} == {BAR}
    adds = [
        m for m in messages if m.analysis.name == "ADD_MEM_REG" and m.analysis.role is Role.REQUEST
    ]
    assert all(len(m.record.fds) == 1 for m in adds)
    findings = [str(f) for m in messages for f in m.analysis.findings]
    assert findings == []


def test_the_memory_table_follows_removals_and_additions() -> None:
    """Feed the trace message by message: after each REM_MEM_REG the BAR's region is gone,
    after each ADD_MEM_REG of it, back."""
    with TraceReader(TRACE) as reader:
        header = reader.header
        records = list(reader)
    analyser = analyser_for(header)
    seen = []
    for record in records:
        for item in analyser.feed(record):
            if (
                isinstance(item, AnalysedMessage)
                and item.analysis.role is Role.REQUEST
                and item.analysis.name in ("ADD_MEM_REG", "REM_MEM_REG")
                and item.analysis.fields["guest_phys_addr"] == BAR
            ):
                state = analyser.conversations[item.record.session].state
                gpas = {r.guest_phys_addr for r in state.regions}
                seen.append((item.analysis.name, BAR in gpas))
    assert ("REM_MEM_REG", False) in seen
    assert all(present == (name == "ADD_MEM_REG") for name, present in seen)
