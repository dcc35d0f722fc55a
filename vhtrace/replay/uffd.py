"""A userfaultfd, for the POSTCOPY_ADVISE reply when replay plays the back-end.

The back-end answers POSTCOPY_ADVISE with a userfaultfd of its own; QEMU registers it
with its fault thread and refuses a reply without one. Python has no binding for
userfaultfd(2), so: ctypes, the syscall number of the machine, the UFFDIO_API
handshake (an fd that never did it is refused by the kernel's other ioctls).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

SYSCALL_USERFAULTFD = {"x86_64": 323, "aarch64": 282}
UFFD_API = 0xAA
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


class _UffdioApi(ctypes.Structure):
    _fields_ = [
        ("api", ctypes.c_uint64),
        ("features", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]


UFFDIO_API = (3 << 30) | (ctypes.sizeof(_UffdioApi) << 16) | (0xAA << 8) | 0x3F
"""_IOWR(UFFDIO, 0x3F, struct uffdio_api)."""


def open_userfaultfd() -> int:
    """A new userfaultfd after UFFDIO_API (OSError when the kernel or the sysctl refuses)."""
    number = SYSCALL_USERFAULTFD.get(platform.machine())
    if number is None:
        raise OSError(f"userfaultfd: syscall number unknown on {platform.machine()}")
    fd = _libc.syscall(ctypes.c_long(number), ctypes.c_long(os.O_CLOEXEC | os.O_NONBLOCK))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"userfaultfd: {os.strerror(err)}")
    api = _UffdioApi(api=UFFD_API, features=0)
    if _libc.ioctl(fd, UFFDIO_API, ctypes.addressof(api)) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"UFFDIO_API: {os.strerror(err)}")
    return int(fd)
