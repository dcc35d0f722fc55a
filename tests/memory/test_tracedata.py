"""Trace format version 2: the snapshot records, old readers, damaged snapshot data."""

from __future__ import annotations

import os
from pathlib import Path

from vhtrace.memory.pages import PAGE_SIZE, page_hash
from vhtrace.memory.tracedata import SnapshotMemory, read_pages, read_snapshots
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import ExtentRecord, PageRecord, SnapshotRecord
from vhtrace.trace.writer import TraceWriter, make_header


def write(path: Path, build) -> None:
    writer = TraceWriter(str(path), make_header())
    build(writer)
    writer.close()


def test_snapshot_records_round_trip(tmp_path: Path) -> None:
    page = os.urandom(PAGE_SIZE)
    digest = page_hash(page)

    def build(writer: TraceWriter) -> None:
        writer.page(digest, page)
        writer.extent(1, 3, "gpa", 0x1000, 2, "buffer:0", 0, [digest, 1])
        writer.snapshot(1, 44, 5, 6, 3, "stop", {"mode": "rings", "rings": []})

    write(tmp_path / "t.vht", build)
    with TraceReader(tmp_path / "t.vht") as reader:
        records = list(reader)
        assert reader.header["version"] == fmt.FORMAT_VERSION == 2
        assert reader.header["needs"] == "0.2.0"
    assert records[0] == PageRecord(digest, fmt.PAGE_RAW, page)
    assert records[1] == ExtentRecord(1, 3, "gpa", 0x1000, 2, "buffer:0", 0, (digest, 1))
    assert records[2] == SnapshotRecord(1, 44, 5, 6, 3, "stop", {"mode": "rings", "rings": ()})


def test_an_extent_whose_base_is_missing_is_unreadable_not_the_trace(tmp_path: Path) -> None:
    page = os.urandom(PAGE_SIZE)
    digest = page_hash(page)

    def build(writer: TraceWriter) -> None:
        writer.page(digest, page)
        writer.extent(2, 1, "gpa", 0, 4, "region", 1, [-4])  # snapshot 1 never written
        writer.extent(2, 1, "gpa", 0x10000, 1, "region", 0, [digest])
        writer.extent(2, 1, "gpa", 0x20000, 2, "region", 0, [5])  # 5 pages for 2
        writer.extent(2, 1, "gpa", 0x30000, 1 << 40, "desc:0", 0, [1 << 40])  # hostile size
        writer.snapshot(2, 0, 0, 0, 1, "signal", {})
        writer.extent(3, 1, "gpa", 0x10000, 1, "region", 2, [-1])  # unchanged since 2
        writer.snapshot(3, 0, 0, 0, 1, "signal", {})

    write(tmp_path / "t.vht", build)
    scan = read_snapshots(TraceReader(tmp_path / "t.vht"))
    second, third = scan.snapshots
    assert len(second.problems) == 3
    assert "base, snapshot 1, is not in the trace" in second.problems[0]
    assert "disagree" in second.problems[1]
    assert "1 to 65536 pages" in second.problems[2]
    assert [e.addr for e in second.extents] == [0x10000]
    store = read_pages(TraceReader(tmp_path / "t.vht"), third.hashes())
    memory = SnapshotMemory(third.extents, store)
    assert memory.read(0x10000, PAGE_SIZE) == page
    assert memory.read(0, 16) is None
