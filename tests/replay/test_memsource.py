"""Replayed guest memory is filled from the trace's snapshots."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.tracecheck import Trace
from vhtrace.memory.tracedata import SnapshotMemory, read_pages, read_snapshots
from vhtrace.replay.fds import FdFactory
from vhtrace.replay.memsource import NoSnapshots, SnapshotSource
from vhtrace.trace.reader import TraceReader

ROOT = Path(__file__).resolve().parents[2]
BLK = ROOT / "traces" / "qemu-qsd-blk.vht"
V1 = ROOT / "tests" / "fixtures" / "traces-v1" / "qemu-qsd-blk.vht"


def test_a_trace_without_snapshots_gives_zero_filled_memory() -> None:
    assert isinstance(SnapshotSource.of_trace(V1), NoSnapshots)


def test_region_memfd_holds_the_first_snapshot_after_it_was_passed() -> None:
    source = SnapshotSource.of_trace(BLK)
    assert isinstance(source, SnapshotSource)
    trace = Trace.read(BLK)
    region_msg = trace.named("ADD_MEM_REG")[-1]  # the big region: the rings live there
    fields = region_msg.analysis.fields
    assert fields is not None
    factory = FdFactory(source)
    made = factory.make(dict(region_msg.record.fds[0]), seq=region_msg.record.seq, index=0,
                        fields=fields)  # fmt: skip
    # What the first snapshot after that message holds, read independently:
    with TraceReader(BLK) as reader:
        scan = read_snapshots(reader, keep=lambda space, role: space == "gpa")
    first = min((s for s in scan.snapshots if s.record.seq >= region_msg.record.seq),
                key=lambda s: s.record.seq)  # fmt: skip
    with TraceReader(BLK) as reader:
        store = read_pages(reader, first.hashes())
    ring = first.info["rings"][0]
    memory = SnapshotMemory(first.extents, store)
    expected = memory.read(ring["desc_gpa"], 16 * ring["num"])
    assert expected is not None and any(expected), "the snapshot captured the descriptor table"
    offset = fields["mmap_offset"] + ring["desc_gpa"] - fields["guest_phys_addr"]
    assert os.pread(made.fd, len(expected), offset) == expected
    factory.close()
