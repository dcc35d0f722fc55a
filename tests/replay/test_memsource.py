"""Replayed guest memory is filled from the trace's snapshots."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.tracecheck import Trace
from vhtrace.memory.tracedata import SnapshotMemory, read_pages, read_snapshots
from vhtrace.replay.fds import FdFactory
from vhtrace.replay.memsource import FillSource, NoSnapshots, SnapshotSource
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


def _trace_with_fills(path: Path, fills: list[dict]) -> Path:
    from vhtrace.trace.writer import TraceWriter, make_header

    writer = TraceWriter(str(path), make_header())
    for info in fills:
        writer.event(1, 1, 1, "memory-fill", info)
    writer.close()
    return path


def test_memory_fill_events_say_what_a_memfd_held_when_passed(tmp_path: Path) -> None:
    """A fuzz reproducer's memfds hold what the fuzzer put in them, found by message and
    fd index (not through a region table a mutation may have changed)."""
    trace = _trace_with_fills(tmp_path / "fills.vht", [
        {"message": 3, "fd": 0, "offset": 0x2000, "data": b"ring"},
        {"message": 3, "fd": 0, "offset": 0x5000, "data": b"chain"},
        {"message": 3, "fd": 1, "offset": 0, "data": b"other fd"},
        {"message": 3, "fd": 0, "offset": -1, "data": b"malformed: skipped"},
        {"message": 3, "fd": 0, "offset": 0x8000 - 2, "data": b"cut at the end"},
        {"message": 3, "fd": 0, "offset": 0x9000, "data": b"past the end: dropped"},
    ])  # fmt: skip
    source = SnapshotSource.of_trace(trace)
    assert isinstance(source, FillSource)
    factory = FdFactory(source)
    made = factory.make({"kind": "memfd", "size": 0x8000}, seq=3, index=0, fields=None)
    try:
        assert os.fstat(made.fd).st_size == 0x8000  # a bad offset grew nothing
        assert os.pread(made.fd, 4, 0x2000) == b"ring"
        assert os.pread(made.fd, 5, 0x5000) == b"chain"
        assert os.pread(made.fd, 4, 0x8000 - 2) == b"cu"
        assert os.pread(made.fd, 8, 0) == bytes(8)  # fd 1's bytes are not fd 0's
        other = factory.make({"kind": "memfd", "size": 0x1000}, seq=4, index=0, fields=None)
        assert os.pread(other.fd, 16, 0) == bytes(16)  # another message: zero-filled
    finally:
        factory.close()


def test_the_fuzzers_fd_factory_keeps_what_it_filled_memfds_with() -> None:
    from vhtrace.fuzz.driver import MemoryFill, RingFds

    class Pages:
        def contents(self, seq, index, meta, fields):  # type: ignore[no-untyped-def]
            return [(0x1000 * seq, b"page of %d" % seq)]

    factory = RingFds(Pages())
    try:
        factory.make({"kind": "memfd", "size": 0x10000}, seq=2, index=0, fields=None)
        assert factory.take_fills(7) == [MemoryFill(7, 0, 0x2000, b"page of 2")]
        assert factory.take_fills(8) == []  # taken once
    finally:
        factory.close()
