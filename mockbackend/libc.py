"""The few libc calls Python's standard library does not offer: mmap with an address, madvise.

Guest memory must be mapped with its address known (postcopy tells the front-end where
each region lives in our address space, and registers that range with userfaultfd), so
regions are mapped with libc's ``mmap`` rather than :mod:`mmap`, and accessed through
ctypes arrays at that address.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
MAP_SHARED = 1
MAP_NORESERVE = 0x4000
MAP_FAILED = ctypes.c_void_p(-1).value
MADV_DONTNEED = 4
MADV_NOHUGEPAGE = 15


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mmap(fd: int, length: int, prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED) -> int:
    """Map ``length`` bytes of ``fd`` from offset 0; the address (OSError on failure)."""
    addr = _libc.mmap(None, length, prot, flags, fd, 0)
    if addr is None or addr == MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap of {length} bytes: {os.strerror(err)}")
    return int(addr)


def munmap(addr: int, length: int) -> None:
    _check(_libc.munmap(addr, length), "munmap")


def madvise(addr: int, length: int, advice: int) -> None:
    _check(_libc.madvise(addr, length, advice), "madvise")


def mprotect(addr: int, length: int, prot: int) -> None:
    _check(_libc.mprotect(addr, length, prot), "mprotect")


def syscall(number: int, *args: int) -> int:
    result = _libc.syscall(number, *(ctypes.c_long(a) for a in args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syscall {number}: {os.strerror(err)}")
    return int(result)


def ioctl(fd: int, request: int, arg: ctypes.Array | ctypes.Structure) -> None:
    _check(_libc.ioctl(fd, request, ctypes.addressof(arg)), f"ioctl 0x{request:x}")


def buffer_at(addr: int, length: int) -> memoryview:
    """A writable memoryview of ``length`` bytes at a mapped address (no copy)."""
    return memoryview((ctypes.c_char * length).from_address(addr)).cast("B")
