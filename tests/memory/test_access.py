"""Kept memory fds: read-only, bounded by the real fd size, holes skipped, peers undisturbed."""

from __future__ import annotations

import os

import pytest

from vhtrace.memory.access import CHUNK_BYTES, MAX_REGIONS, Chunk, FdArea, SessionMemory
from vhtrace.memory.pages import PAGE_SIZE

MiB = 1 << 20


def memfd(size: int, writes: dict[int, bytes] | None = None) -> int:
    fd = os.memfd_create("vhtrace-test", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    for offset, data in (writes or {}).items():
        os.pwrite(fd, data, offset)
    return fd


def region(gpa: int, size: int, offset: int = 0, uaddr: int = 0x7F0000000000) -> dict:
    return {
        "guest_phys_addr": gpa,
        "memory_size": size,
        "userspace_addr": uaddr + gpa,
        "mmap_offset": offset,
    }


def test_holes_are_skipped_without_reading_or_allocating() -> None:
    fd = memfd(64 * MiB, {5 * MiB: b"x" * PAGE_SIZE, 40 * MiB + 3: b"y"})
    area, problem = FdArea.open(os.dup(fd), 0, 64 * MiB)
    assert area is not None and problem is None
    chunks = list(area.chunks(0, 64 * MiB))
    read = sum(c.size for c in chunks if c.data is not None)
    assert read <= 2 * CHUNK_BYTES  # a chunk from each of the two pages of data, no more
    assert sum(c.size for c in chunks) == 64 * MiB
    assert all(c.offset % PAGE_SIZE == 0 and c.size % PAGE_SIZE == 0 for c in chunks)
    assert os.fstat(fd).st_blocks * 512 <= 4 * PAGE_SIZE  # nothing allocated in the memfd
    area.close()
    os.close(fd)


def test_the_kept_fd_is_read_only_and_the_peers_offset_does_not_move() -> None:
    fd = memfd(MiB, {0: b"guest"})
    os.lseek(fd, 1234, os.SEEK_SET)
    area, _ = FdArea.open(os.dup(fd), 0, MiB)
    assert area is not None and area.seekable
    list(area.chunks(0, MiB))
    assert os.lseek(fd, 0, os.SEEK_CUR) == 1234
    with pytest.raises(OSError):
        os.pwrite(area.fd, b"no", 0)
    assert area.read(0, 5) == b"guest"
    area.close()
    os.close(fd)


def test_a_region_claiming_more_than_its_fd_holds_reads_what_is_there() -> None:
    fd = memfd(2 * MiB, {MiB: b"z"})
    area, problem = FdArea.open(os.dup(fd), 0, 1 << 63)
    assert area is not None and "the fd holds 0x200000" in (problem or "")
    assert area.readable() == 2 * MiB
    assert area.read((1 << 63) - 16, 16) is None
    last = list(area.chunks(MiB, 4 * MiB))[-1]
    assert last == Chunk(MiB, 3 * MiB, None, missing=True)
    area.close()
    overflow, problem = FdArea.open(os.dup(fd), 1 << 63, 1 << 63)
    assert overflow is None and "overflows" in (problem or "")
    os.close(fd)


def test_fds_that_are_not_memory_are_refused() -> None:
    r, w = os.pipe()
    area, problem = FdArea.open(r, 0, 4096)
    assert area is None and "not a memory file" in (problem or "")
    os.close(w)


def test_an_fd_that_shrinks_during_a_scan_ends_in_missing_bytes() -> None:
    fd = memfd(4 * MiB, {i * MiB: b"d" * MiB for i in range(4)})
    area, _ = FdArea.open(os.dup(fd), 0, 4 * MiB)
    assert area is not None
    pieces = area.chunks(0, 4 * MiB)
    first = next(pieces)
    os.ftruncate(fd, MiB + 100)
    rest = list(pieces)
    assert first.data is not None
    assert sum(c.size for c in [first, *rest]) == 4 * MiB
    assert rest[-1].missing and rest[-1].data is None
    area.close()
    os.close(fd)


def test_session_memory_reads_across_regions_and_reports_gaps() -> None:
    low = memfd(MiB, {MiB - 4: b"LOW!"})
    high = memfd(3 * MiB, {2 * MiB: b"HIGH"})
    memory = SessionMemory()
    assert memory.add_region(region(0, MiB), os.dup(low), 1) is None
    assert memory.add_region(region(MiB, MiB, offset=2 * MiB), os.dup(high), 2) is None
    assert memory.read(MiB - 4, 8) == b"LOW!HIGH"
    assert memory.contains(0, 2 * MiB) and not memory.contains(0, 2 * MiB + 1)
    assert memory.read(2 * MiB - 2, 4) is None
    chunks = list(memory.gpa_chunks(MiB - PAGE_SIZE, 3 * PAGE_SIZE + MiB))
    assert chunks[-1].missing and chunks[-1].offset == MiB + PAGE_SIZE
    memory.remove_region(region(0, MiB))
    assert memory.read(0, 4) is None and len(memory.regions) == 1
    memory.close()
    assert memory.empty
    for fd in (low, high):
        os.close(fd)


def test_no_fd_is_left_open() -> None:
    before = set(os.listdir("/proc/self/fd"))
    fd = memfd(MiB)
    memory = SessionMemory()
    memory.add_region(region(0, MiB), os.dup(fd), 1)
    memory.set_area("inflight", {"mmap_size": 4096, "mmap_offset": 0}, os.dup(fd), 2)
    memory.set_area("inflight", {"mmap_size": 4096, "mmap_offset": 0}, os.dup(fd), 3)
    memory.set_area("log", {"mmap_size": 4096, "mmap_offset": 0}, os.dup(fd), 4)
    memory.close()
    os.close(fd)
    assert set(os.listdir("/proc/self/fd")) == before


def test_a_flood_of_regions_cannot_exhaust_the_relays_fds() -> None:
    fd = memfd(PAGE_SIZE)
    memory = SessionMemory()
    before = set(os.listdir("/proc/self/fd"))
    problems = [
        memory.add_region(region(i * PAGE_SIZE, PAGE_SIZE), os.dup(fd), i)
        for i in range(MAX_REGIONS + 10)
    ]
    assert problems[:MAX_REGIONS] == [None] * MAX_REGIONS
    assert all("not kept" in (p or "") for p in problems[MAX_REGIONS:])
    assert len(set(os.listdir("/proc/self/fd")) - before) == MAX_REGIONS
    memory.close()
    os.close(fd)
