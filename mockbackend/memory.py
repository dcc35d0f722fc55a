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

Memory that shrinks under us (issue 17, point 12): the front-end may ``ftruncate`` an fd after
passing it, and touching a mapped page past the new end of file is a SIGBUS that kills the
process. So each fd is kept (a dup) and its seals read when it arrives:

* sealed against shrinking (``F_SEAL_SHRINK``, as QEMU's memfd backends and its dirty log
  are): the size checked on arrival holds for good; accesses go through the mapping;
* not sealed: reads copy through ``os.pread`` on the fd, which returns short past the end
  of file instead of faulting; writes first check that the range's last byte still reads
  back, then ``os.pwrite`` (a file shrunk between the check and the write grows back: no
  signal either); views handed to ``preadv``/``pwritev`` are checked the same way (a
  kernel copy into a page that vanished fails with EFAULT, never a signal). A shrunk
  region raises :class:`MemoryShrunk` and is reported once, through ``on_violation``.
  Left: regions mapped for postcopy, and fds whose filesystem has no ``write``
  (hugetlbfs), are accessed through the mapping after that check, so a shrink between the
  check and the access can still fault.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from mockbackend import libc
from vhtrace.protocol.spec import PAGE_SIZE

log = logging.getLogger("mockbackend")

F_GET_SEALS = 1034
F_SEAL_SHRINK = 0x0002


class AccessError(Exception):
    """A guest address that no region covers (or a range that runs past one)."""


class MemoryShrunk(AccessError):
    """The fd behind a region (or the dirty log) is now smaller than what was mapped."""


def sealed_against_shrinking(fd: int) -> bool:
    """True if ``fd`` is a memfd with F_SEAL_SHRINK (its size can never go down)."""
    try:
        return bool(fcntl.fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK)
    except OSError:  # not a memfd (EINVAL): no seals
        return False


def fd_size(fd: int) -> int:
    """What the fd holds now, for a shrink report (-1 if it cannot be asked)."""
    try:
        return os.fstat(fd).st_size
    except OSError:
        return -1


def _keep(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


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
    fd: int = -1
    """Our dup of the region's fd (closed when the region is unmapped)."""
    sealed: bool = False
    """F_SEAL_SHRINK was set on arrival: the mapping can be touched without checks."""
    through_map: bool = False
    """Accessed through the mapping even if not sealed (postcopy: faults must reach the
    userfaultfd), after a size check."""
    pwrite_ok: bool = True
    """False once pwrite failed with EINVAL (hugetlbfs): writes go through the mapping."""
    shrunk: bool = False
    """Already reported as shrunk (once per region)."""
    awaiting_ack: bool = False
    """Mapped PROT_NONE for postcopy until the front-end acks our reply: touching it before
    would fault with no userfaultfd behind it (SIGSEGV, found by vhtrace fuzz)."""

    @property
    def fd_need(self) -> int:
        """Bytes the fd must hold for the whole region."""
        return self.mmap_offset + self.memory_size

    def describe(self) -> str:
        end = self.guest_phys_addr + self.memory_size
        return f"guest memory region gpa {self.guest_phys_addr:#x}-{end:#x}"

    @property
    def host_addr(self) -> int:
        """Our address of the region's first byte ('client base' in postcopy)."""
        return self.map_addr + self.mmap_offset


class DirtyLog:
    """The front-end's dirty bitmap: one bit per 4 KiB guest page."""

    def __init__(
        self,
        fd: int,
        size: int,
        offset: int,
        on_violation: Callable[[str, str], None] | None = None,
    ) -> None:
        self.length = size + offset
        self.offset = offset
        self.sealed = sealed_against_shrinking(fd)
        held = os.fstat(fd).st_size  # again, after the seals: a shrink may have come first
        if held < self.length:
            raise OSError(f"log fd holds {held:#x} bytes, expected at least {self.length:#x}")
        self.fd = _keep(fd)
        try:
            self.addr = libc.mmap(fd, self.length)
        except OSError:
            _close(self.fd)
            raise
        self.size = size
        self.view = libc.buffer_at(self.addr + offset, size)
        self.shrunk = False
        """Reported as shrunk: nothing is logged any more."""
        self.on_violation = on_violation
        self._lock = threading.Lock()

    def mark(self, gpa: int, length: int) -> None:
        if length <= 0 or self.shrunk:
            return
        first, last = gpa // PAGE_SIZE, (gpa + length - 1) // PAGE_SIZE
        with self._lock:
            if self.sealed:
                for page in range(first, last + 1):
                    byte = page // 8
                    if byte < self.size:
                        self.view[byte] |= 1 << (page % 8)
                return
            self._mark_by_pread(first, last)

    def _mark_by_pread(self, first: int, last: int) -> None:
        """Read-modify-write the bitmap bytes through the fd: never faults."""
        start, end = first // 8, min(last // 8 + 1, self.size)
        if start >= end:
            return
        at = self.offset + start
        data = bytearray(os.pread(self.fd, end - start, at))
        if len(data) < end - start:
            self._shrank()
            return
        for page in range(first, last + 1):
            byte = page // 8 - start
            if byte < len(data):
                data[byte] |= 1 << (page % 8)
        os.pwrite(self.fd, data, at)

    def _shrank(self) -> None:
        self.shrunk = True
        held = fd_size(self.fd)
        text = (
            f"SET_LOG_BASE fd shrank after it was sent: it holds {held:#x} bytes, expected "
            f"at least {self.length:#x} (log of {self.size:#x} bytes at offset "
            f"{self.offset:#x}); dirty pages are no longer logged"
        )
        if self.on_violation is not None:
            self.on_violation("log-shrunk", text)

    def close(self) -> None:
        self.view.release()
        libc.munmap(self.addr, self.length)
        _close(self.fd)


class GuestMemory:
    """The region table and this process's mappings of it; thread-safe for readers."""

    def __init__(self, on_violation: Callable[[str, str], None] | None = None) -> None:
        self.regions: list[MappedRegion] = []
        self.log: DirtyLog | None = None
        self.on_violation = on_violation
        """Called with (code, text) when the front-end breaks memory under us."""
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
        through_map: bool = False,
    ) -> MappedRegion:
        """Map a region; a dup of the fd is kept to check or bypass the mapping (see the
        module docstring). ``through_map``: access it through the mapping (postcopy)."""
        if memory_size == 0 or memory_size + mmap_offset >= 1 << 63:
            raise AccessError(f"region size {memory_size:#x} + offset {mmap_offset:#x} unusable")
        sealed = sealed_against_shrinking(fd)  # before the size check: then it holds
        if os.fstat(fd).st_size < memory_size + mmap_offset:
            raise AccessError(
                f"fd holds {os.fstat(fd).st_size:#x} bytes, region needs "
                f"{memory_size + mmap_offset:#x}"
            )
        length = memory_size + mmap_offset
        addr = libc.mmap(fd, length, prot, flags)
        try:
            kept = _keep(fd)
        except OSError:
            libc.munmap(addr, length)
            raise
        region = MappedRegion(
            guest_phys_addr,
            memory_size,
            userspace_addr,
            mmap_offset,
            addr,
            length,
            fd=kept,
            sealed=sealed,
            through_map=through_map,
        )
        with self._lock:
            self.regions = [*self.regions, region]
        how = "through the mapping" if sealed else "through pread/pwrite (fd not sealed)"
        log.info("%s mapped, accessed %s", region.describe(), how)
        return region

    def remove(self, guest_phys_addr: int, userspace_addr: int, memory_size: int) -> bool:
        """Unmap the region with these coordinates; False if there is none."""
        with self._lock:
            for region in self.regions:
                key = (region.guest_phys_addr, region.userspace_addr, region.memory_size)
                if key == (guest_phys_addr, userspace_addr, memory_size):
                    self.regions = [r for r in self.regions if r is not region]
                    libc.munmap(region.map_addr, region.map_length)
                    _close(region.fd)
                    return True
        return False

    def clear(self) -> None:
        """Unmap every region and the dirty log."""
        with self._lock:
            regions, self.regions = self.regions, []
        for region in regions:
            libc.munmap(region.map_addr, region.map_length)
            _close(region.fd)
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
                if region.awaiting_ack:
                    raise AccessError(
                        f"{region.describe()} is mapped for postcopy and the front-end has "
                        "not acked it yet: not touched"
                    )
                return region
        raise AccessError(f"guest address {gpa:#x} is in no region")

    def _check_range(self, gpa: int, length: int) -> None:
        if length < 0 or gpa < 0 or gpa + length > 1 << 64:
            raise AccessError(f"bad range {gpa:#x}+{length}")

    def _shrunk(self, region: MappedRegion, gpa: int, length: int) -> MemoryShrunk:
        """The error for an access past the shrunk end of ``region``'s fd; reported once."""
        held = fd_size(region.fd)
        text = (
            f"{region.describe()} shrank after it was sent: its fd holds {held:#x} bytes, "
            f"expected at least {region.fd_need:#x} (mmap_offset {region.mmap_offset:#x} + "
            f"size {region.memory_size:#x}); access at gpa {gpa:#x}+{length:#x} refused"
        )
        if not region.shrunk:
            region.shrunk = True
            if self.on_violation is not None:
                self.on_violation("memory-shrunk", text)
        return MemoryShrunk(text)

    def _check_size(self, region: MappedRegion, offset: int, length: int) -> None:
        """Does the fd of an unsealed region still hold [offset, offset+length)? (Its last
        byte read back: a pread past the end of file is empty; cheaper than fstat.)"""
        if not os.pread(region.fd, 1, region.mmap_offset + offset + length - 1):
            raise self._shrunk(region, region.guest_phys_addr + offset, length)

    def views(self, gpa: int, length: int) -> list[memoryview]:
        """Writable views covering [gpa, gpa+length), one per region crossed.

        For the kernel's use (preadv/pwritev), which fails with EFAULT rather than
        faulting if a page vanishes; unsealed regions are size-checked first."""
        self._check_range(gpa, length)
        out: list[memoryview] = []
        while length > 0:
            region = self._locate(gpa)
            offset = gpa - region.guest_phys_addr
            take = min(length, region.memory_size - offset)
            if not region.sealed:
                self._check_size(region, offset, take)
            out.append(libc.buffer_at(region.host_addr + offset, take))
            gpa += take
            length -= take
        return out

    def read(self, gpa: int, length: int) -> bytes:
        self._check_range(gpa, length)
        parts: list[bytes] = []
        while length > 0:
            region = self._locate(gpa)
            offset = gpa - region.guest_phys_addr
            take = min(length, region.memory_size - offset)
            if region.sealed:
                parts.append(ctypes.string_at(region.host_addr + offset, take))
            elif region.through_map:
                self._check_size(region, offset, take)
                parts.append(ctypes.string_at(region.host_addr + offset, take))
            else:
                data = os.pread(region.fd, take, region.mmap_offset + offset)
                if len(data) < take:
                    raise self._shrunk(region, gpa, take)
                parts.append(data)
            gpa += take
            length -= take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, gpa: int, data: bytes) -> None:
        self._check_range(gpa, len(data))
        start, position, length = gpa, 0, len(data)
        while length > 0:
            region = self._locate(gpa)
            offset = gpa - region.guest_phys_addr
            take = min(length, region.memory_size - offset)
            chunk = data[position : position + take] if take != len(data) else data
            if region.sealed:
                ctypes.memmove(region.host_addr + offset, bytes(chunk), take)
            else:
                self._check_size(region, offset, take)
                if region.through_map or not self._pwrite(region, offset, chunk):
                    ctypes.memmove(region.host_addr + offset, bytes(chunk), take)
            gpa += take
            position += take
            length -= take
        self.dirty(start, len(data))

    def _pwrite(self, region: MappedRegion, offset: int, chunk: bytes) -> bool:
        """Write through the fd; False if its filesystem cannot (hugetlbfs: EINVAL)."""
        if not region.pwrite_ok:
            return False
        try:
            done = os.pwrite(region.fd, chunk, region.mmap_offset + offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise AccessError(f"{region.describe()}: write failed: {exc}") from exc
            region.pwrite_ok = False
            return False
        if done != len(chunk):
            raise self._shrunk(region, region.guest_phys_addr + offset, len(chunk))
        return True

    def dirty(self, gpa: int, length: int) -> None:
        """Declare a write the back-end made by other means (preadv into a view)."""
        log = self.log
        if log is not None:
            log.mark(gpa, length)
