"""Snapshots written and read back: pages once, zero pages never, deltas, ring extents."""

from __future__ import annotations

import os
import random
from pathlib import Path

from tests.memory.guest import F_NEXT, F_WRITE
from tests.memory.talk import FEATURES, Talk
from vhtrace.memory.access import Chunk, SessionMemory
from vhtrace.memory.capture import SnapshotOptions, Snapshotter, whole_pages
from vhtrace.memory.pages import PAGE_SIZE
from vhtrace.memory.tracedata import SnapshotMemory, read_pages, read_snapshots
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import ExtentRecord, PageRecord
from vhtrace.trace.writer import TraceWriter, make_header

MiB = 1 << 20
UADDR = 0x7F0000000000
REGION = {"guest_phys_addr": 0, "memory_size": 8 * MiB, "userspace_addr": UADDR, "mmap_offset": 0}


def guest(seed: int = 1) -> tuple[int, bytes]:
    """An 8 MiB memfd: mostly zero, some random pages, a split ring at 0x10000."""
    rng = random.Random(seed)
    fd = os.memfd_create("guest", os.MFD_CLOEXEC)
    os.ftruncate(fd, 8 * MiB)
    for page in rng.sample(range(128, 2048), 40):  # clear of the ring and its buffers
        os.pwrite(fd, rng.randbytes(PAGE_SIZE), page * PAGE_SIZE)
    # ring of 4 at 0x10000 (desc), 0x10800 (avail), 0x11000 (used); one chain 0 -> 1
    os.pwrite(
        fd,
        (0x40000).to_bytes(8, "little")
        + (100).to_bytes(4, "little")
        + F_NEXT.to_bytes(2, "little")
        + (1).to_bytes(2, "little"),
        0x10000,
    )
    os.pwrite(
        fd,
        (0x50000).to_bytes(8, "little")
        + (5000).to_bytes(4, "little")
        + F_WRITE.to_bytes(2, "little")
        + bytes(2),
        0x10010,
    )
    os.pwrite(fd, bytes([0, 0, 1, 0, 0, 0]), 0x10800)  # avail idx 1, ring[0] = head 0
    os.pwrite(fd, b"request header", 0x40000)
    os.pwrite(fd, b"B" * 5000, 0x50000)
    return fd, os.pread(fd, 8 * MiB, 0)


def session(fd: int) -> tuple[SessionMemory, Talk]:
    talk = Talk()
    talk.send("SET_FEATURES", {"features": FEATURES})
    talk.send("ADD_MEM_REG", {"padding": 0, **REGION}, fds=1)
    talk.ring(0, 4, UADDR + 0x10000, UADDR + 0x10800, UADDR + 0x11000)
    memory = SessionMemory()
    memory.add_region(REGION, os.dup(fd), 2)
    return memory, talk


def snapshotter(path: Path, mode: str) -> Snapshotter:
    return Snapshotter(TraceWriter(str(path), make_header()), SnapshotOptions(mode))


def test_a_full_snapshot_reads_back_byte_for_byte_and_a_second_one_costs_nothing(
    tmp_path: Path,
) -> None:
    fd, content = guest()
    memory, talk = session(fd)
    shots = snapshotter(tmp_path / "t.vht", "full")
    first = shots.take(1, memory, talk.state, "signal", 0, 1, 1)
    second = shots.take(1, memory, talk.state, "signal", 0, 2, 2)
    shots.writer.close()
    assert first.stats.new_pages == 44  # 40 random pages, the ring page, three buffer pages
    assert first.stats.pages == 2048 + 3  # the region, and the desc, avail, used extents
    assert first.stats.zero_pages == 2048 + 3 - 44 - 2  # the ring page again: desc, avail
    assert second.stats.new_pages == 0 and second.stats.new_bytes == 0

    records = list(TraceReader(tmp_path / "t.vht"))
    pages = [r for r in records if isinstance(r, PageRecord)]
    assert len(pages) == len({p.hash for p in pages}) == 44
    extents = [r for r in records if isinstance(r, ExtentRecord)]
    region_maps = [e for e in extents if e.role == "region"]
    assert region_maps[1].base == 1 and region_maps[1].items == (-2048,)

    scan = read_snapshots(TraceReader(tmp_path / "t.vht"))
    assert [s.number for s in scan.snapshots] == [1, 2] and scan.problem is None
    for snap in scan.snapshots:
        store = read_pages(TraceReader(tmp_path / "t.vht"), snap.hashes())
        image = SnapshotMemory(snap.extents, store).read(0, 8 * MiB)
        assert image == content
    memory.close()
    os.close(fd)


def test_a_rings_snapshot_holds_the_ring_and_the_buffers_only(tmp_path: Path) -> None:
    fd, content = guest()
    memory, talk = session(fd)
    shots = snapshotter(tmp_path / "t.vht", "rings")
    result = shots.take(1, memory, talk.state, "stop", 9, 1, 1)
    shots.writer.close()
    assert result.problems == []
    (snap,) = read_snapshots(TraceReader(tmp_path / "t.vht")).snapshots
    roles = sorted({e.role for e in snap.extents})
    assert roles == ["avail:0", "buffer:0", "desc:0", "used:0"]
    (ring,) = snap.info["rings"]
    assert (ring["desc_gpa"], ring["avail_gpa"], ring["used_gpa"]) == (0x10000, 0x10800, 0x11000)
    store = read_pages(TraceReader(tmp_path / "t.vht"), snap.hashes())
    image = SnapshotMemory(snap.extents, store)
    assert image.read(0x40000, 14) == b"request header"
    assert image.read(0x50000, 5000) == content[0x50000:0x51388]
    assert image.read(0x200000, 16) is None  # never captured
    assert result.stats.pages == 3 + 1 + 2  # ring parts, the header page, 2 buffer pages
    memory.close()
    os.close(fd)


def test_buffers_outside_memory_and_beyond_the_budget_are_counted(tmp_path: Path) -> None:
    fd, _ = guest()
    os.pwrite(fd, (0xFFFF0000000).to_bytes(8, "little"), 0x10010)  # buffer in no region
    memory, talk = session(fd)
    shots = Snapshotter(
        TraceWriter(str(tmp_path / "t.vht"), make_header()),
        SnapshotOptions("rings", buffer_limit=0),
    )
    result = shots.take(1, memory, talk.state, "stop", 9, 1, 1)
    shots.writer.close()
    assert result.stats.outside_bytes == 5000
    assert result.stats.left_out_bytes == 100
    memory.close()
    os.close(fd)


def test_pieces_cut_at_unaligned_boundaries_become_whole_pages() -> None:
    pieces = [
        Chunk(0, 100, b"a" * 100),
        Chunk(100, PAGE_SIZE * 3 - 100, None, missing=True),
        Chunk(PAGE_SIZE * 3, PAGE_SIZE, b"b" * PAGE_SIZE),
        Chunk(PAGE_SIZE * 4, 10, b"c" * 10),
    ]
    out = list(whole_pages(pieces))
    assert [(c.offset, c.size) for c in out] == [
        (0, PAGE_SIZE),
        (PAGE_SIZE, 2 * PAGE_SIZE),
        (3 * PAGE_SIZE, PAGE_SIZE),
        (4 * PAGE_SIZE, PAGE_SIZE),
    ]
    assert out[0].data == b"a" * 100 + bytes(PAGE_SIZE - 100) and out[0].missing
    assert out[1].data is None and out[1].missing
    assert out[3].data == b"c" * 10 + bytes(PAGE_SIZE - 10)
    aligned = [Chunk(0, PAGE_SIZE, None)]
    assert list(whole_pages(aligned)) == aligned
