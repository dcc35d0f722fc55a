"""The shared in-flight area (INFLIGHT_SHMFD), in libvhost-user's split-ring layout.

The back-end hands the front-end a memfd (GET_INFLIGHT_FD); the front-end keeps it and
gives it back (SET_INFLIGHT_FD) to every back-end it connects to, including a restarted
one. The back-end marks each descriptor chain in flight when it pops it and clears the
mark when it pushes the chain back, so a restarted back-end knows which requests the
previous one took but never finished, and submits them again.

Per queue, ``vu_inflight_queue_size(queue_size)`` bytes: a ``VuVirtqInflight`` header
and ``VuDescStateSplit`` entries (the layouts are in :mod:`vhtrace.protocol.virtio`).

Values read back from the area are not trusted (bad-inputs #16: a ``last_batch_head``
beyond ``desc_num``). Nor is its size (issue 17, point 12): the area the mock creates is
sealed against shrinking and used through its mapping; an fd that comes unsealed with
SET_INFLIGHT_FD is read and written with ``pread``/``pwrite`` (see
:mod:`mockbackend.memory`), so a front-end that shrinks it gets :class:`MemoryShrunk`
(the ring breaks) and an ``inflight-shrunk`` violation instead of a SIGBUS.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from mockbackend.memory import MemoryShrunk, fd_size, sealed_against_shrinking
from vhtrace.protocol import virtio
from vhtrace.protocol.virtio import (
    INFLIGHT_COUNTER_OFFSET,
    INFLIGHT_DESC_NUM_OFFSET,
    INFLIGHT_LAST_BATCH_HEAD_OFFSET,
    INFLIGHT_SPLIT_DESC,
    INFLIGHT_SPLIT_HEADER,
    INFLIGHT_USED_IDX_OFFSET,
    INFLIGHT_VERSION,
    INFLIGHT_VERSION_OFFSET,
    inflight_queue_region_size,
    inflight_split_desc_offset,
)

F_ADD_SEALS = 1033
SEALS = 0x0001 | 0x0002 | 0x0004  # F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW, as QEMU's


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a ring picks up after a reconnect, read from the in-flight area."""

    last_avail_idx: int
    resubmit: list[int]
    """Heads that were in flight, oldest first."""


class InflightQueue:
    """One queue's part of the area: through a view of the mapping (sealed area), or,
    given ``fd``, through pread/pwrite at ``base`` in it (an area that may shrink)."""

    def __init__(
        self,
        view: memoryview,
        queue_size: int,
        fd: int | None = None,
        base: int = 0,
        on_shrunk: Callable[[int, int], MemoryShrunk] | None = None,
    ) -> None:
        self.view = view
        self.queue_size = queue_size
        self.counter = 0
        self.fd = fd
        self.base = base
        self.on_shrunk = on_shrunk

    def _read(self, fmt: struct.Struct, offset: int) -> tuple:
        if self.fd is None:
            return fmt.unpack_from(self.view, offset)
        data = os.pread(self.fd, fmt.size, self.base + offset)
        if len(data) < fmt.size:
            raise self._shrunk(offset, fmt.size)
        return fmt.unpack(data)

    def _header(self) -> tuple[int, int, int, int, int]:
        return self._read(INFLIGHT_SPLIT_HEADER, 0)  # type: ignore[return-value]

    def _set(self, fmt: str, offset: int, value: int) -> None:
        if self.fd is None:
            struct.pack_into(fmt, self.view, offset, value)
            return
        data = struct.pack(fmt, value)
        at = self.base + offset
        if not os.pread(self.fd, 1, at + len(data) - 1):  # past the end: pwrite would grow
            raise self._shrunk(offset, len(data))
        os.pwrite(self.fd, data, at)

    def _shrunk(self, offset: int, length: int) -> MemoryShrunk:
        if self.on_shrunk is None:
            return MemoryShrunk(f"in-flight area shrank: {length} bytes at {offset:#x} gone")
        return self.on_shrunk(self.base + offset, length)

    @property
    def version(self) -> int:
        return self._header()[1]

    @property
    def used_idx(self) -> int:
        return self._header()[4]

    def desc(self, index: int) -> tuple[int, int, int]:
        """(inflight, next, counter) of a descriptor's state."""
        return self._read(INFLIGHT_SPLIT_DESC, inflight_split_desc_offset(index))  # type: ignore[return-value]

    def get(self, head: int) -> None:
        """The chain at ``head`` was popped: mark it in flight."""
        offset = inflight_split_desc_offset(head)
        self._set("<Q", offset + INFLIGHT_COUNTER_OFFSET, self.counter)
        self.counter += 1
        self._set("<B", offset, 1)

    def pre_put(self, head: int) -> None:
        self._set("<H", INFLIGHT_LAST_BATCH_HEAD_OFFSET, head)

    def post_put(self, head: int, used_idx: int) -> None:
        self._set("<B", inflight_split_desc_offset(head), 0)
        self._set("<H", INFLIGHT_USED_IDX_OFFSET, used_idx)

    def resume(self, ring_used_idx: int) -> Resume | None:
        """After SET_VRING_KICK: None for a fresh area, else what to resubmit."""
        _, version, desc_num, last_batch_head, used_idx = self._header()
        if version == 0:
            self._set("<H", INFLIGHT_VERSION_OFFSET, INFLIGHT_VERSION)
            self._set("<H", INFLIGHT_DESC_NUM_OFFSET, self.queue_size)
            return None
        desc_num = min(desc_num, self.queue_size)
        if used_idx != ring_used_idx:
            # The last push reached the used ring but not the area: it is done.
            if last_batch_head < desc_num:
                self._set("<B", inflight_split_desc_offset(last_batch_head), 0)
            self._set("<H", INFLIGHT_USED_IDX_OFFSET, ring_used_idx)
        pending = []
        for index in range(desc_num):
            inflight, _, counter = self.desc(index)
            if inflight == 1:
                pending.append((counter, index))
        pending.sort()
        self.counter = pending[-1][0] + 1 if pending else 0
        return Resume(
            (ring_used_idx + len(pending)) & virtio.INDEX_MASK, [head for _, head in pending]
        )


class InflightArea:
    """The whole area: a memfd of ``num_queues`` queue regions, mapped here."""

    def __init__(
        self,
        fd: int,
        size: int,
        offset: int,
        num_queues: int,
        queue_size: int,
        on_violation: Callable[[str, str], None] | None = None,
    ) -> None:
        step = inflight_queue_region_size(queue_size)
        if num_queues * step > size:
            raise ValueError(
                f"area of {size} bytes is too small for {num_queues} queues of {queue_size}"
            )
        self.fd = fd
        self.size = size
        self.offset = offset
        self.num_queues = num_queues
        self.queue_size = queue_size
        self.sealed = sealed_against_shrinking(fd)  # before mmap's size check: then it holds
        self.on_violation = on_violation
        self.shrunk = False
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, offset=offset)
        self._view = memoryview(self._map)
        by_fd = None if self.sealed else fd
        self.queues = [
            InflightQueue(
                self._view[i * step : (i + 1) * step],
                queue_size,
                by_fd,
                offset + i * step,
                self._shrunk,
            )
            for i in range(num_queues)
        ]

    def _shrunk(self, at: int, length: int) -> MemoryShrunk:
        """The error for an access past the shrunk end of the fd; reported once."""
        held = fd_size(self.fd)
        text = (
            f"SET_INFLIGHT_FD area shrank after it was sent: its fd holds {held:#x} bytes, "
            f"expected at least {self.offset + self.size:#x} (mmap_offset {self.offset:#x} + "
            f"size {self.size:#x}); access at {at:#x}+{length:#x} refused"
        )
        if not self.shrunk:
            self.shrunk = True
            if self.on_violation is not None:
                self.on_violation("inflight-shrunk", text)
        return MemoryShrunk(text)

    @classmethod
    def create(cls, num_queues: int, queue_size: int) -> InflightArea:
        """A new zeroed area in a fresh memfd (GET_INFLIGHT_FD)."""
        size = inflight_queue_region_size(queue_size) * num_queues
        fd = os.memfd_create("mockbackend-inflight", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, F_ADD_SEALS, SEALS)  # whoever gets it cannot shrink it under us
        return cls(fd, size, 0, num_queues, queue_size)

    def queue(self, index: int) -> InflightQueue | None:
        return self.queues[index] if 0 <= index < len(self.queues) else None

    def close(self) -> None:
        for queue in self.queues:
            queue.view.release()
        self._view.release()
        self._map.close()
        os.close(self.fd)
