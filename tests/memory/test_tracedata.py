"""Trace format version 2: the snapshot records, old readers, damaged snapshot data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.memory.guest import F_NEXT, GuestRam, SplitLayout
from vhtrace.memory.packed import PackedBase
from vhtrace.memory.pages import PAGE_SIZE, page_hash
from vhtrace.memory.plan import config_problem, decode_ring
from vhtrace.memory.report import backend_position, reuse, ring_lines
from vhtrace.memory.split import decode_split
from vhtrace.memory.tracedata import SnapshotMemory, read_pages, read_snapshots
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceError, TraceReader
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


def test_a_version_1_reader_refuses_version_2_and_says_what_it_needs(
    tmp_path: Path, monkeypatch
) -> None:
    write(tmp_path / "t.vht", lambda writer: None)
    monkeypatch.setattr(fmt, "READABLE_VERSIONS", frozenset({1}))
    with pytest.raises(TraceError, match=r"version 2: this trace needs vhtrace >= 0\.2\.0"):
        TraceReader(tmp_path / "t.vht")


def test_version_1_traces_still_read() -> None:
    trace = (
        Path(__file__).resolve().parents[2]
        / "tests"
        / "fixtures"
        / "traces-v1"
        / "qemu-qsd-blk.vht"
    )
    with TraceReader(trace) as reader:
        assert reader.header["version"] == 1
        assert len(list(reader)) > 40 and reader.problem is None


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


def test_used_entries_whose_head_was_taken_again_are_marked_reused() -> None:
    ram = GuestRam(0x10000)
    layout = SplitLayout(ram, 4)
    ram.desc(layout.desc, 0, 0x8000, 16, F_NEXT, 1)
    layout.avail_ring(4, [0, 0, 0, 0])
    layout.used_ring(3, [(0, 1), (0, 2), (0, 3)])  # request idx 3 is pending with head 0
    ring = decode_split(ram, 4, layout.desc, layout.avail, layout.used)
    assert reuse(ring) == {2: 3, 1: 3, 0: 3}
    config = {
        "index": 0,
        "num": 4,
        "layout": "split",
        "desc_gpa": layout.desc,
        "avail_gpa": layout.avail,
        "used_gpa": layout.used,
        "base": 4,
    }
    text = "\n".join(ring_lines(decode_ring(config, ram), ram))
    assert "(its descriptors were reused by idx 3)" in text
    assert "SET_VRING_BASE 4: 0 made available not taken yet, 1 taken and not used" in text


def test_ring_configurations_from_a_trace_are_checked_before_decoding() -> None:
    assert config_problem({"index": 0, "num": 8, "desc_gpa": None}) is None
    assert config_problem("ring") == "not a map"
    assert config_problem({"index": 0}) == "no num"
    assert config_problem({"index": 0, "num": 8, "desc_gpa": "0x10"}) == "desc_gpa is not a number"


def test_the_back_ends_position_comes_from_the_right_message() -> None:
    assert backend_position({"base": 3, "last_base": 9, "started": False}) == (
        9,
        "GET_VRING_BASE",
    )
    assert backend_position({"base": 3, "last_base": 9, "started": True}) == (3, "SET_VRING_BASE")
    assert backend_position({}) == (None, "")
    assert PackedBase.from_num(0x80008005) == PackedBase(5, True, 0, True)
