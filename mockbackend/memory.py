"""Guest memory as the back-end sees it: the front-end's regions, mapped from their fds.

Three address spaces meet here. Descriptors carry guest-physical addresses (GPA); ring
addresses in SET_VRING_ADDR are the front-end's user addresses (its virtual address of
the same byte); the back-end reaches both through its own mapping of the region's fd.
:class:`GuestMemory` keeps the region table and answers every access through it, refusing
anything that falls outside a region or runs past its end (bad-inputs #9) with
:class:`AccessError` rather than touching memory it does not own.

Dirty logging (migration): once SET_LOG_BASE handed a log, every write the back-end makes
through :meth:`GuestMemory.write` or declares with :meth:`GuestMemory.dirty` sets the
page bits of the shared bitmap, so the front-end re-sends those pages.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from mockbackend import libc

PAGE = 0x1000


class AccessError(Exception):
    """A guest address that no region covers (or a range that runs past one)."""


@dataclass(slots=True)
class MappedRegion:
    """One region of guest memory and where it is mapped in this process."""

    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int
    map_addr: int
    """Address of our mapping of the fd from offset 0 (libvhost-user's convention)."""
    map_length: int

    @property
    def host_addr(self) -> int:
        """Our address of the region's first byte ('client base' in postcopy)."""
        return self.map_addr + self.mmap_offset


class DirtyLog:
    """The front-end's dirty bitmap: one bit per 4 KiB guest page."""

    def __init__(self, fd: int, size: int, offset: int) -> None:
        self.length = size + offset
        self.addr = libc.mmap(fd, self.length)
        self.size = size
        self.view = libc.buffer_at(self.addr + offset, size)
        self._lock = threading.Lock()

    def mark(self, gpa: int, length: int) -> None:
        if length <= 0:
            return
        with self._lock:
            for page in range(gpa // PAGE, (gpa + length - 1) // PAGE + 1):
                byte = page // 8
                if byte < self.size:
                    self.view[byte] |= 1 << (page % 8)

    def close(self) -> None:
        self.view.release()
        libc.munmap(self.addr, self.length)


class GuestMemory:
    """The region table and this process's mappings of it; thread-safe for readers."""

    def __init__(self) -> None:
        self.regions: list[MappedRegion] = []
        self.log: DirtyLog | None = None
        self._lock = threading.Lock()

    # -- the table -------------------------------------------------------------

    def add(
        self,
        fd: int,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int,
        mmap_offset: int,
        *,
        prot: int = libc.PROT_READ | libc.PROT_WRITE,
        flags: int = libc.MAP_SHARED,
    ) -> MappedRegion:
        """Map a region (the fd is not kept: the mapping holds the memory)."""
        if memory_size == 0 or memory_size + mmap_offset >= 1 << 63:
            raise AccessError(f"region size {memory_size:#x} + offset {mmap_offset:#x} unusable")
        if os.fstat(fd).st_size < memory_size + mmap_offset:
            raise AccessError(
                f"fd holds {os.fstat(fd).st_size:#x} bytes, region needs "
                f"{memory_size + mmap_offset:#x}"
            )
        length = memory_size + mmap_offset
        addr = libc.mmap(fd, length, prot, flags)
        region = MappedRegion(
            guest_phys_addr, memory_size, userspace_addr, mmap_offset, addr, length
        )
        with self._lock:
            self.regions = [*self.regions, region]
        return region

    def remove(self, guest_phys_addr: int, userspace_addr: int, memory_size: int) -> bool:
        """Unmap the region with these coordinates; False if there is none."""
        with self._lock:
            for region in self.regions:
                key = (region.guest_phys_addr, region.userspace_addr, region.memory_size)
                if key == (guest_phys_addr, userspace_addr, memory_size):
                    self.regions = [r for r in self.regions if r is not region]
                    libc.munmap(region.map_addr, region.map_length)
                    return True
        return False

    def clear(self) -> None:
        """Unmap every region and the dirty log."""
        with self._lock:
            regions, self.regions = self.regions, []
        for region in regions:
            libc.munmap(region.map_addr, region.map_length)
        self.set_log(None)

    def set_log(self, log: DirtyLog | None) -> None:
        old, self.log = self.log, log
        if old is not None:
            old.close()

    # -- translation -----------------------------------------------------------

    def uaddr_to_gpa(self, uaddr: int, length: int) -> int:
        """The GPA of a front-end user address whose range lies in one region."""
        for region in self.regions:
            start = region.userspace_addr
            if start <= uaddr and uaddr + length <= start + region.memory_size:
                return region.guest_phys_addr + (uaddr - start)
        raise AccessError(f"user address {uaddr:#x}+{length} is in no region")

    def _locate(self, gpa: int) -> MappedRegion:
        for region in self.regions:
            if region.guest_phys_addr <= gpa < region.guest_phys_addr + region.memory_size:
                return region
        raise AccessError(f"guest address {gpa:#x} is in no region")

    def views(self, gpa: int, length: int) -> list[memoryview]:
        """Writable views covering [gpa, gpa+length), one per region crossed."""
        if length < 0 or gpa < 0 or gpa + length > 1 << 64:
            raise AccessError(f"bad range {gpa:#x}+{length}")
        out: list[memoryview] = []
        while length > 0:
            region = self._locate(gpa)
            offset = gpa - region.guest_phys_addr
            take = min(length, region.memory_size - offset)
            out.append(libc.buffer_at(region.host_addr + offset, take))
            gpa += take
            length -= take
        return out

    def read(self, gpa: int, length: int) -> bytes:
        return b"".join(bytes(view) for view in self.views(gpa, length))

    def write(self, gpa: int, data: bytes) -> None:
        position = 0
        for view in self.views(gpa, len(data)):
            view[:] = data[position : position + len(view)]
            position += len(view)
        self.dirty(gpa, len(data))

    def dirty(self, gpa: int, length: int) -> None:
        """Declare a write the back-end made by other means (preadv into a view)."""
        log = self.log
        if log is not None:
            log.mark(gpa, length)
