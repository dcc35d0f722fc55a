"""userfaultfd for postcopy: the back-end's half of the front-end's page-fault handling.

During postcopy the destination's guest RAM fills in page by page. A back-end touching a
page that has not arrived must wait for it instead of reading zeros, so it registers its
mappings of guest memory with a userfaultfd it created (UFFDIO_REGISTER, MISSING mode)
and hands that fd to the front-end (the POSTCOPY_ADVISE reply). The front-end reads the
faults, fetches the pages from the source and wakes the faulting thread.

ctypes only: Python has no binding for userfaultfd(2) or its ioctls.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform

from mockbackend import libc

SYSCALL_USERFAULTFD = {"x86_64": 323, "aarch64": 282}
UFFD_API = 0xAA
UFFDIO_REGISTER_MODE_MISSING = 1
UFFDIO_COPY_BIT = 3


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (0xAA << 8) | nr


class UffdioApi(ctypes.Structure):
    _fields_ = [
        ("api", ctypes.c_uint64),
        ("features", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]


class UffdioRegister(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]


UFFDIO_API = _iowr(0x3F, ctypes.sizeof(UffdioApi))
UFFDIO_REGISTER = _iowr(0x00, ctypes.sizeof(UffdioRegister))


def open_userfaultfd() -> int:
    """A new userfaultfd after the UFFDIO_API handshake (OSError if the kernel refuses)."""
    number = SYSCALL_USERFAULTFD.get(platform.machine())
    if number is None:
        raise OSError(f"userfaultfd syscall number unknown on {platform.machine()}")
    fd = libc.syscall(number, os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        api = UffdioApi(api=UFFD_API, features=0)
        libc.ioctl(fd, UFFDIO_API, api)
    except OSError:
        os.close(fd)
        raise
    return fd


def register_missing(ufd: int, addr: int, length: int) -> None:
    """Make missing-page faults in [addr, addr+length) go to ``ufd``, as libvhost-user does.

    The range is first emptied (MADV_DONTNEED: pages still arrive through the shared
    memfd), then registered, then opened for access (it was mapped PROT_NONE)."""
    libc.madvise(addr, length, libc.MADV_DONTNEED)
    with contextlib.suppress(OSError):  # only a performance hint, not always supported
        libc.madvise(addr, length, libc.MADV_NOHUGEPAGE)
    reg = UffdioRegister(start=addr, len=length, mode=UFFDIO_REGISTER_MODE_MISSING)
    libc.ioctl(ufd, UFFDIO_REGISTER, reg)
    if not reg.ioctls >> UFFDIO_COPY_BIT & 1:
        raise OSError("userfaultfd region does not support UFFDIO_COPY")
    libc.mprotect(addr, length, libc.PROT_READ | libc.PROT_WRITE)
