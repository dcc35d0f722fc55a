"""Guest memory writes and ring kicks a trace asks replay to make (a fuzz ring mutation).

A ring mutation of ``vhtrace fuzz`` is not a message: the fuzzer wrote a malformed
descriptor chain into the guest memory it handed out, once the ring ran, and signalled
the ring's kick eventfd. Its reproducer carries that as events after the message that
started the ring: ``guest-write`` ``{after: N, message: M, fd: I, offset, data}`` (bytes at
a file offset of the memfd passed as fd I of message M: what the back-end sees whatever
a mutated region table says), or ``{after: N, gpa, data}`` (at a guest-physical address,
through the regions as sent), and ``ring-kick`` ``{after: N, kick: K}`` (the eventfd
passed with message K). Replaying the front-end side makes them once message N is out:
the bytes go into that replayed memfd, the kick into our copy of the eventfd made for
message K. :class:`GuestMemoryFds` is the replay's fd factory keeping what that
needs (the regions and their memfds, a copy of each eventfd).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhtrace.replay.fds import FdFactory
from vhtrace.replay.memsource import MemorySource
from vhtrace.replay.memsource import _region as memory_region
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EventRecord

GUEST_WRITE = "guest-write"
RING_KICK = "ring-kick"


@dataclass(frozen=True)
class GuestAction:
    """One thing done to guest memory or a ring once message ``after`` was sent."""

    after: int
    gpa: int | None = None
    data: bytes = b""
    kick: int | None = None
    """The message whose eventfd is signalled (None: a write)."""
    memfd: tuple[int, int] | None = None
    """(message, fd index) of the memfd written at ``offset`` (None: at ``gpa``)."""
    offset: int = 0

    def event(self) -> tuple[str, dict[str, Any]]:
        """The trace event that says it."""
        if self.kick is not None:
            return RING_KICK, {"after": self.after, "kick": self.kick}
        if self.memfd is not None:
            message, fd = self.memfd
            where = {"message": message, "fd": fd, "offset": self.offset}
            return GUEST_WRITE, {"after": self.after, **where, "data": self.data}
        return GUEST_WRITE, {"after": self.after, "gpa": self.gpa, "data": self.data}


def action_of(record: EventRecord) -> GuestAction | None:
    """The action an event says, or None (another event, or one missing its fields)."""
    info = record.info or {}
    after = info.get("after")
    if not isinstance(after, int):
        return None
    if record.event == RING_KICK and isinstance(info.get("kick"), int):
        return GuestAction(after, kick=info["kick"])
    data = info.get("data")
    if record.event != GUEST_WRITE or not isinstance(data, bytes):
        return None
    if isinstance(info.get("gpa"), int):
        return GuestAction(after, info["gpa"], data)
    where = [info.get(key) for key in ("message", "fd", "offset")]
    if all(isinstance(v, int) and v >= 0 for v in where):
        message, fd, offset = where
        return GuestAction(after, data=data, memfd=(message, fd), offset=offset)
    return None


def read_actions(path: str | os.PathLike[str]) -> dict[int, list[GuestAction]]:
    """Every guest action of a trace, by the message number it follows."""
    actions: dict[int, list[GuestAction]] = {}
    with TraceReader(Path(path)) as reader:
        for record in reader:
            if isinstance(record, EventRecord) and record.event in (GUEST_WRITE, RING_KICK):
                action = action_of(record)
                if action is not None:
                    actions.setdefault(action.after, []).append(action)
    return actions


class GuestMemoryFds(FdFactory):
    """The replay's fd factory, keeping the memory regions with their memfds and a copy of
    each eventfd (the passed one is closed once sent), so guest actions can be made."""

    def __init__(self, memory: MemorySource | None) -> None:
        super().__init__(memory)
        self.regions: list[tuple[dict[str, Any], int]] = []
        self.memfds: dict[tuple[int, int], int] = {}
        """(message number, fd index) -> the memfd made for it."""
        self.eventfds: dict[int, int] = {}
        """Message number -> our copy of the eventfd made for it."""

    def make(self, meta, *, seq, index, fields=None):  # type: ignore[no-untyped-def]
        made = super().make(meta, seq=seq, index=index, fields=fields)
        if meta.get("kind") == "eventfd" and seq not in self.eventfds:
            self.eventfds[seq] = os.dup(made.fd)
        return made

    def _memory(self, meta, seq, index, fields):  # type: ignore[no-untyped-def]
        made = super()._memory(meta, seq, index, fields)
        self.memfds.setdefault((seq, index), made.fd)
        region = memory_region(fields, index)
        if region is not None:
            self.regions.append((region, made.fd))
        return made

    def where(self, addr: int, length: int, key: str = "guest_phys_addr") -> tuple[int, int] | None:
        """(memfd, file offset) of ``length`` bytes at a gpa (or user address), if mapped."""
        for region, fd in self.regions:
            start = int(region[key])
            if start <= addr and addr + length <= start + int(region["memory_size"]):
                return fd, int(region["mmap_offset"]) + addr - start
        return None

    def gpa_of(self, uaddr: int) -> int | None:
        """The guest-physical address of a front-end user address (a ring's), if mapped."""
        for region, _ in self.regions:
            start = int(region["userspace_addr"])
            if start <= uaddr < start + int(region["memory_size"]):
                return int(region["guest_phys_addr"]) + uaddr - start
        return None

    def make_action(self, action: GuestAction) -> bool:
        """Do it; False if there is nothing to do it to (the address is not mapped...)."""
        if action.kick is not None:
            fd = self.eventfds.get(action.kick)
            if fd is None:
                return False
            with contextlib.suppress(OSError):
                os.eventfd_write(fd, 1)
            return True
        if action.memfd is not None:
            fd = self.memfds.get(action.memfd)
            # a trace's offsets are not trusted: nothing goes past the memfd's end
            if fd is None or action.offset + len(action.data) > os.fstat(fd).st_size:
                return False
            os.pwrite(fd, action.data, action.offset)
            return True
        assert action.gpa is not None
        where = self.where(action.gpa, len(action.data))
        if where is None:
            return False
        os.pwrite(where[0], action.data, where[1])
        return True

    def passed_as(self, fd: int) -> list[tuple[int, int]]:
        """The (message, fd index) pairs a memfd was passed as, in order (QEMU passes one
        memfd for several regions)."""
        return [key for key, made in self.memfds.items() if made == fd]

    def close(self) -> None:
        for fd in self.eventfds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.eventfds.clear()
        self.regions.clear()
        self.memfds.clear()
        super().close()
