"""The memory fds the recorder keeps, and reading guest memory through them.

Every memory fd passed in a message (regions, the inflight area, the dirty log)
reaches the recorder as a dup. The recorder reopens it read-only through
``/proc/self/fd`` (a file description of its own: it cannot write guest memory,
and moving its file offset cannot disturb the peers, which share the dup's) and
reads it with ``pread``. It deliberately does not ``mmap`` it: a read fault on a
hole of a memfd or a hugetlbfs file *allocates* the page in the guest's memory
(measured: reading a sparse 1 GiB memfd through a mapping made the guest's memfd
hold 1 GiB, pread left it at its 51 MiB), and a peer that shrinks an unsealed fd
under a mapping kills the reader with SIGBUS; pread reads holes as zeros without
allocating and stops at the end of the file. ``SEEK_DATA`` lets a scan skip holes
without reading them at all.

Sizes from the wire are never trusted: what is read is bounded by the fd's
real size (fstat, at every read), and a region that claims more is reported.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from vhtrace.memory.pages import PAGE_SIZE
from vhtrace.protocol import spec

CHUNK_BYTES = 1 << 20
"""Bytes read per pread during a scan: what one scan step holds in memory."""
U64 = 1 << 64
MAX_READ = 16 << 20
"""The most ``SessionMemory.read`` returns at once (the decoders need 512 KiB at most)."""
MAX_REGIONS = spec.MAX_RAM_SLOTS
"""Regions kept per session at most: each holds an fd of the relay's own process."""


class Chunk(NamedTuple):
    """A piece of an extent: ``data`` read, or None for zeros that need no reading."""

    offset: int
    """From the start of the extent."""
    size: int
    data: bytes | None
    missing: bool = False
    """The declared range lies beyond the end of the fd (or outside every region)."""


def reopen_readonly(fd: int) -> int | None:
    """A read-only file description of our own for ``fd``'s file, or None."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class FdArea:
    """Bytes [file_offset, file_offset+length) of a kept memory fd."""

    def __init__(self, fd: int, file_offset: int, length: int, *, seekable: bool = True) -> None:
        self.fd = fd
        self.file_offset = file_offset
        self.length = length
        self.seekable = seekable
        """Our own file description: SEEK_DATA cannot move the peers' file offset."""
        self.closed = False

    @classmethod
    def open(cls, fd: int, file_offset: int, length: int) -> tuple[FdArea | None, str | None]:
        """Take ownership of ``fd`` (closed here in every case); the area or why not."""
        if file_offset < 0 or length < 0 or file_offset + length >= U64:
            os.close(fd)
            return None, f"offset 0x{file_offset:x} + size 0x{length:x} overflows 64 bits"
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            return None, f"fstat failed: {exc.strerror}"
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None, "not a memory file (memfd, hugetlbfs or regular file)"
        own = reopen_readonly(fd)
        if own is not None:
            os.close(fd)
            area = cls(own, file_offset, length)
        else:
            area = cls(fd, file_offset, length, seekable=False)
        problem = None
        if st.st_size < file_offset + length:
            problem = (
                f"declares 0x{length:x} bytes at offset 0x{file_offset:x} but the fd holds "
                f"0x{st.st_size:x}: reading only what is there"
            )
        return area, problem

    def fd_size(self) -> int:
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return 0

    def readable(self) -> int:
        """Bytes of the area that exist in the fd right now."""
        return max(0, min(self.length, self.fd_size() - self.file_offset))

    def read(self, offset: int, length: int) -> bytes | None:
        """Exactly ``length`` bytes at ``offset`` of the area, or None if not all exist."""
        if offset < 0 or length < 0 or offset + length > self.length or self.closed:
            return None
        try:
            data = os.pread(self.fd, length, self.file_offset + offset)
        except OSError:
            return None
        return data if len(data) == length else None

    def chunks(self, offset: int, length: int, chunk: int = CHUNK_BYTES) -> Iterator[Chunk]:
        """[offset, offset+length) of the area in pieces of whole pages (from ``offset``).

        Holes come as ``data=None`` without being read; bytes beyond the end of the
        fd (or of the area) as ``data=None, missing=True``."""
        end = offset + length
        limit = min(end, max(offset, self.readable()))
        pos = offset
        while pos < limit:
            data_at = min(self._seek(pos, os.SEEK_DATA, limit), limit)
            if data_at > pos:
                hole_end = pos + (data_at - pos) // PAGE_SIZE * PAGE_SIZE
                if hole_end > pos:
                    yield Chunk(pos - offset, hole_end - pos, None)
                    pos = hole_end
                    continue
            # Read a whole chunk from here: holes inside it read as zeros, cheaply. (Asking
            # SEEK_HOLE where the data ends would walk all the data to the next hole: on a
            # fully populated memfd, every call scans to the end of the file.)
            stop = min(pos + chunk, _page_ceil(limit, offset))
            want = min(stop, limit) - pos
            try:
                data = os.pread(self.fd, want, self.file_offset + pos)
            except OSError:
                data = b""
            if len(data) < want:  # the fd shrank under us: the rest is missing
                limit = pos + len(data)
            size = stop - pos if len(data) == want else _page_ceil(len(data), 0)
            if not data:
                break
            if len(data) < size:
                data += bytes(size - len(data))
            yield Chunk(pos - offset, size, data)
            pos += size
        if pos < end:
            yield Chunk(pos - offset, end - pos, None, missing=True)

    def _seek(self, pos: int, whence: int, limit: int) -> int:
        """Where the next data starts from ``pos``, relative to the area."""
        if not self.seekable:
            return pos
        try:
            return os.lseek(self.fd, self.file_offset + pos, whence) - self.file_offset
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return limit
            return pos

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                os.close(self.fd)


def _page_ceil(value: int, origin: int) -> int:
    return origin + (value - origin + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE


@dataclass
class MemoryRegion:
    """A region of the memory table, with the fd the recorder kept for it."""

    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int
    seq: int
    area: FdArea | None
    fd_meta: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "gpa": self.guest_phys_addr,
            "size": self.memory_size,
            "uaddr": self.userspace_addr,
            "mmap_offset": self.mmap_offset,
            "seq": self.seq,
            "readable": self.area.readable() if self.area else 0,
        }
        if self.fd_meta:
            info["fd"] = {k: self.fd_meta[k] for k in ("kind", "size", "name") if k in self.fd_meta}
        if self.problem:
            info["problem"] = self.problem
        return info


@dataclass
class SharedArea:
    """The inflight area or the dirty log: an fd and the message fields that sized it."""

    kind: str
    area: FdArea | None
    fields: dict[str, Any]
    seq: int
    problem: str | None = None

    def describe(self) -> dict[str, Any]:
        info = {k: v for k, v in self.fields.items() if k != "padding"}
        info["seq"] = self.seq
        info["readable"] = self.area.readable() if self.area else 0
        if self.problem:
            info["problem"] = self.problem
        return info

    def close(self) -> None:
        if self.area is not None:
            self.area.close()


class SessionMemory:
    """The shared memory of one session: its regions and areas, readable by address."""

    def __init__(self) -> None:
        self.regions: list[MemoryRegion] = []
        self.inflight: SharedArea | None = None
        self.log: SharedArea | None = None

    # -- what the messages change -------------------------------------------------

    def add_region(
        self, fields: dict[str, Any], fd: int | None, seq: int, meta: dict[str, Any] | None = None
    ) -> str | None:
        """Keep a region (taking ownership of ``fd``); a problem text, if any."""
        if len(self.regions) >= MAX_REGIONS:
            if fd is not None:
                os.close(fd)
            return f"more than {MAX_REGIONS} regions: this one is not kept"
        area, problem = (
            (None, "no fd")
            if fd is None
            else FdArea.open(fd, fields["mmap_offset"], fields["memory_size"])
        )
        self.regions.append(
            MemoryRegion(
                fields["guest_phys_addr"],
                fields["memory_size"],
                fields["userspace_addr"],
                fields["mmap_offset"],
                seq,
                area,
                meta or {},
                problem,
            )
        )
        return problem

    def remove_region(self, fields: dict[str, Any]) -> None:
        key = (fields["guest_phys_addr"], fields["userspace_addr"], fields["memory_size"])
        keep = []
        for region in self.regions:
            if (region.guest_phys_addr, region.userspace_addr, region.memory_size) == key:
                if region.area is not None:
                    region.area.close()
            else:
                keep.append(region)
        self.regions = keep

    def clear_regions(self) -> None:
        for region in self.regions:
            if region.area is not None:
                region.area.close()
        self.regions = []

    def set_area(self, kind: str, fields: dict[str, Any], fd: int, seq: int) -> str | None:
        """Keep the inflight area or the log (replacing the previous one).

        Both are ``mmap_size`` bytes at ``mmap_offset`` of their fd."""
        area, problem = FdArea.open(fd, fields["mmap_offset"], fields["mmap_size"])
        shared = SharedArea(kind, area, dict(fields), seq, problem)
        old = getattr(self, kind)
        if old is not None:
            old.close()
        setattr(self, kind, shared)
        return problem

    def close(self) -> None:
        self.clear_regions()
        for kind in ("inflight", "log"):
            old = getattr(self, kind)
            if old is not None:
                old.close()
            setattr(self, kind, None)

    @property
    def empty(self) -> bool:
        return not self.regions and self.inflight is None and self.log is None

    # -- reading --------------------------------------------------------------------

    def region_at(self, gpa: int) -> MemoryRegion | None:
        for region in self.regions:
            if region.guest_phys_addr <= gpa < region.guest_phys_addr + region.memory_size:
                return region
        return None

    def contains(self, gpa: int, length: int) -> bool:
        """Is all of [gpa, gpa+length) in regions the recorder can read?"""
        pos, end = gpa, gpa + length
        while pos < end:
            region = self.region_at(pos)
            if region is None or region.area is None:
                return False
            pos = region.guest_phys_addr + region.memory_size
        return True

    def read(self, gpa: int, length: int) -> bytes | None:
        """Exactly ``length`` guest-physical bytes (possibly across regions), or None."""
        if length < 0 or length > MAX_READ:
            return None
        parts = []
        pos, end = gpa, gpa + length
        while pos < end:
            region = self.region_at(pos)
            if region is None or region.area is None:
                return None
            stop = min(end, region.guest_phys_addr + region.memory_size)
            data = region.area.read(pos - region.guest_phys_addr, stop - pos)
            if data is None:
                return None
            parts.append(data)
            pos = stop
        return b"".join(parts)

    def gpa_chunks(self, gpa: int, length: int) -> Iterator[Chunk]:
        """[gpa, gpa+length) of guest memory in chunks (see FdArea.chunks)."""
        pos, end = gpa, gpa + length
        while pos < end:
            region = self.region_at(pos)
            if region is None or region.area is None:
                following = [
                    r.guest_phys_addr for r in self.regions if pos < r.guest_phys_addr < end
                ]
                stop = min(following, default=end)
                yield Chunk(pos - gpa, stop - pos, None, missing=True)
                pos = stop
                continue
            stop = min(end, region.guest_phys_addr + region.memory_size)
            base = pos - gpa
            for piece in region.area.chunks(pos - region.guest_phys_addr, stop - pos):
                yield piece._replace(offset=base + piece.offset)
            pos = stop

    def area_chunks(self, kind: str, offset: int, length: int) -> Iterator[Chunk]:
        shared: SharedArea | None = getattr(self, kind)
        if shared is None or shared.area is None:
            yield Chunk(0, length, None, missing=True)
            return
        yield from shared.area.chunks(offset, length)
