"""Re-create the recorded file descriptors, by kind, for the messages replay sends.

A trace keeps what each fd was (kind, size, memfd name, dev/ino), never the fd. Replay
makes a new one of the same kind: a memfd of the recorded size (filled from a
:class:`~vhtrace.replay.memsource.MemorySource`, zeros until traces hold snapshots),
an eventfd, a socketpair for a channel socket (we keep the other end and speak on it),
a pipe (we keep the end the peer does not get), a userfaultfd.

The same memory file recorded twice (same dev:ino: QEMU passes one memfd for several
regions, and again after a reconnect) becomes the same replayed memfd, so the peer
maps one file as it did live. Eventfds and userfaultfds are anonymous inodes that all
share one dev:ino, so they are always made fresh.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any

from vhtrace.replay.memsource import MemorySource, NoSnapshots
from vhtrace.replay.uffd import open_userfaultfd

MEMORY_KINDS = frozenset({"memfd", "regular", "hugetlbfs", "dma-buf"})


@dataclass
class Made:
    """A re-created fd, ready to pass, and what the caller keeps of it."""

    fd: int
    close_after_send: bool
    """Ours only until the kernel has passed it: close once sent."""
    kept: socket.socket | int | None = None
    """Our end of a socketpair (a socket) or pipe (an int fd), for the caller to use."""
    kept_kind: str | None = None
    """``socket``, ``pipe-read`` or ``pipe-write``."""
    note: str | None = None
    """What stands in for what (a memfd for a recorded regular file...)."""


class FdFactory:
    """Makes fds by recorded kind; owns the memory fds until :meth:`close`."""

    def __init__(self, memory: MemorySource | None = None) -> None:
        self.memory = memory or NoSnapshots()
        self._memory_fds: dict[tuple[str, int], int] = {}
        self._owned: list[int] = []
        self.notes: list[str] = []

    def make(
        self, meta: dict[str, Any], *, seq: int, index: int, fields: dict[str, Any] | None = None
    ) -> Made:
        """A new fd like the recorded one described by ``meta`` (fd ``index`` of message
        ``seq``, whose decoded payload is ``fields``)."""
        kind = str(meta.get("kind", "other"))
        if kind in MEMORY_KINDS:
            return self._memory(meta, seq, index, fields)
        if kind == "eventfd":
            return Made(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK), True)
        if kind == "socket":
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            fd = theirs.detach()
            return Made(fd, True, ours, "socket")
        if kind == "pipe":
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            if "wronly" in meta.get("flags", ()):
                return Made(write_end, True, read_end, "pipe-read")
            return Made(read_end, True, write_end, "pipe-write")
        if kind == "userfaultfd":
            try:
                return Made(open_userfaultfd(), True)
            except OSError as exc:
                note = f"#{seq}: no userfaultfd ({exc}); /dev/null passed instead"
                return Made(self._null(), True, note=self._note(note))
        return Made(
            self._null(),
            True,
            note=self._note(
                f"#{seq}: fd {index} was recorded as {kind!r}; /dev/null passed instead"
            ),
        )

    def _memory(
        self, meta: dict[str, Any], seq: int, index: int, fields: dict[str, Any] | None
    ) -> Made:
        key = (str(meta["dev"]), int(meta["ino"])) if "dev" in meta and "ino" in meta else None
        kind = str(meta.get("kind"))
        fd = self._memory_fds.get(key) if key is not None else None
        if fd is None:
            name = str(meta.get("name") or f"vhtrace-replay-{kind}")
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            self._owned.append(fd)
            os.ftruncate(fd, int(meta.get("size") or 0))
            if key is not None:
                self._memory_fds[key] = fd
        for offset, data in self.memory.contents(seq, index, meta, fields) or ():
            os.pwrite(fd, data, offset)
        note = None
        if kind != "memfd":
            note = self._note(f"#{seq}: a memfd of the recorded size stands in for a {kind} fd")
        return Made(fd, False, note=note)

    def _null(self) -> int:
        return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

    def _note(self, text: str) -> str:
        if text not in self.notes:
            self.notes.append(text)
        return text

    def close(self) -> None:
        """Close the memory fds (the peer keeps its own copies)."""
        for fd in self._owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._owned.clear()
        self._memory_fds.clear()
