"""What a passed file descriptor is: kind, identity, size, memfd name, seals, flags.

vhost-user moves its most interesting state in fds (guest memory memfds,
kick/call eventfds, the postcopy userfaultfd, sockets for other channels), so
the recorder notes what each one was. Everything comes from the fd itself:
``/proc/self/fd`` (what the kernel calls it), fstat, fstatfs and fcntl.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import socket
import stat
from typing import Any

F_GET_SEALS = 1034
SEALS = {0x1: "seal", 0x2: "shrink", 0x4: "grow", 0x8: "write", 0x10: "future_write", 0x20: "exec"}
HUGETLBFS_MAGIC = 0x958458F6
SOCKET_TYPES = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "dgram",
                socket.SOCK_SEQPACKET: "seqpacket"}  # fmt: skip
FD_KINDS = ("memfd", "eventfd", "socket", "userfaultfd", "pipe", "regular", "hugetlbfs",
            "dma-buf", "other")  # fmt: skip
"""The kinds an fd is reported as."""


class _StatFs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def filesystem_magic(fd: int) -> int | None:
    """f_type of the filesystem an fd lives on (fstatfs), or None if it fails."""
    buf = _StatFs()
    if _libc.fstatfs(fd, ctypes.byref(buf)) != 0:
        return None
    return buf.f_type & 0xFFFFFFFF


def open_flags(flags: int) -> list[str]:
    access = {os.O_RDONLY: "rdonly", os.O_WRONLY: "wronly", os.O_RDWR: "rdwr"}
    names = [access.get(flags & os.O_ACCMODE, "accmode?")]
    for bit, name in ((os.O_NONBLOCK, "nonblock"), (os.O_APPEND, "append"),
                      (getattr(os, "O_DIRECT", 0), "direct"), (os.O_SYNC, "sync")):  # fmt: skip
        if bit and flags & bit == bit:
            names.append(name)
    return names


def kind_of_link(target: str, mode: int, fs_magic: int | None) -> str:
    """The kind of an fd from its /proc/self/fd link, its st_mode and its filesystem."""
    if target.startswith("/memfd:"):
        return "memfd"
    if target.startswith("socket:") or stat.S_ISSOCK(mode):
        return "socket"
    if target.startswith("pipe:") or stat.S_ISFIFO(mode):
        return "pipe"
    if target == "anon_inode:[eventfd]":
        return "eventfd"
    if target == "anon_inode:[userfaultfd]":
        return "userfaultfd"
    if "dmabuf" in target:
        return "dma-buf"
    if stat.S_ISREG(mode):
        return "hugetlbfs" if fs_magic == HUGETLBFS_MAGIC else "regular"
    return "other"


def describe(fd: int) -> dict[str, Any]:
    """Metadata of an open fd, as recorded in traces (never raises)."""
    meta: dict[str, Any] = {}
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
    except OSError as exc:
        return {"kind": "other", "error": exc.strerror or str(exc)}
    fs_magic = filesystem_magic(fd)
    kind = kind_of_link(target, st.st_mode, fs_magic)
    meta["kind"] = kind
    meta["dev"] = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    meta["ino"] = st.st_ino
    if kind in ("memfd", "regular", "hugetlbfs", "dma-buf"):
        meta["size"] = st.st_size
    if kind == "memfd":
        meta["name"] = target.removeprefix("/memfd:").removesuffix(" (deleted)")
    elif kind in ("regular", "hugetlbfs"):
        meta["path"] = target
    with contextlib.suppress(OSError):
        meta["flags"] = open_flags(fcntl.fcntl(fd, fcntl.F_GETFL))
    if kind in ("memfd", "hugetlbfs", "regular"):
        try:
            seals = fcntl.fcntl(fd, F_GET_SEALS)
            meta["seals"] = [name for bit, name in SEALS.items() if seals & bit]
        except OSError:
            pass
    if kind == "socket":
        meta.update(_socket_info(fd))
    return meta


def _socket_info(fd: int) -> dict[str, Any]:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return {}
    try:
        info: dict[str, Any] = {
            "family": socket.AddressFamily(sock.family).name.removeprefix("AF_").lower(),
            "type": SOCKET_TYPES.get(sock.type, str(int(sock.type))),
        }
        if sock.family == socket.AF_UNIX:
            name = sock.getsockname()
            if name:
                info["address"] = name if isinstance(name, str) else repr(name)
        return info
    except OSError:
        return {}
    finally:
        sock.close()
