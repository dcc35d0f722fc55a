"""Split virtqueues over guest memory: pop descriptor chains, push used entries, notify.

Pure logic over a memory-access object (:class:`MemoryAccess`: ``read``/``write``/
``views``/``dirty`` by guest-physical address), so that it is tested with a bytearray and
used with :class:`mockbackend.memory.GuestMemory` in the real back-end. The layout is the
virtio 1.x split ring:

    descriptor table  16 B each: u64 addr, u32 len, u16 flags, u16 next
    avail ring        u16 flags, u16 idx, u16 ring[num], u16 used_event
    used ring         u16 flags, u16 idx, {u32 id, u32 len}[num], u16 avail_event

Everything read from the guest is treated as hostile: a head or ``next`` beyond the
table, a chain longer than the table (a loop), an indirect table inside an indirect table
or of a size that is not a multiple of 16, a readable buffer after a writable one, or an
avail index that moved by more than the ring size all raise :class:`VirtqueueError`; the
caller marks the ring broken instead of looping or reading past its memory.

In-flight tracking for reconnection (libvhost-user's shared inflight area) is optional:
pass an :class:`mockbackend.inflight.InflightQueue` and every pop/push is recorded there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from vhtrace.protocol import virtio
from vhtrace.protocol.virtio import (
    AVAIL_F_NO_INTERRUPT,
    DESC,
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    DESC_SIZE,
    INDEX_MASK,
    MAX_QUEUE_SIZE,
    U16,
    USED_ELEM,
    need_event,
)

_U16_SIZE = U16.size
_ELEM_SIZE = USED_ELEM.size

if TYPE_CHECKING:
    from mockbackend.inflight import InflightQueue


class VirtqueueError(Exception):
    """The guest put something in the ring that a device must refuse."""


class MemoryAccess(Protocol):
    """Guest memory by guest-physical address."""

    def read(self, gpa: int, length: int) -> bytes: ...

    def write(self, gpa: int, data: bytes) -> None: ...

    def views(self, gpa: int, length: int) -> list[memoryview]: ...

    def dirty(self, gpa: int, length: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Buffer:
    """One descriptor's buffer: guest address and length."""

    addr: int
    length: int


@dataclass(slots=True)
class Chain:
    """A popped descriptor chain: device-readable buffers, then device-writable ones."""

    head: int
    """Split ring: the head descriptor's index. Packed ring: the buffer id."""
    readable: list[Buffer] = field(default_factory=list)
    writable: list[Buffer] = field(default_factory=list)
    count: int = 1
    """Ring slots the chain took (a packed ring skips that many when it is used)."""

    def add(self, buf: Buffer, writable: bool) -> None:
        """Append a buffer; readable ones must all come before writable ones."""
        if writable:
            self.writable.append(buf)
        elif self.writable:
            raise VirtqueueError("device-readable buffer after a device-writable one")
        else:
            self.readable.append(buf)

    @property
    def readable_bytes(self) -> int:
        return sum(b.length for b in self.readable)

    @property
    def writable_bytes(self) -> int:
        return sum(b.length for b in self.writable)


def buffer_views(mem: MemoryAccess, buffers: list[Buffer]) -> list[memoryview]:
    """Views of every byte of ``buffers``, in order (for preadv/pwritev)."""
    return [view for b in buffers for view in mem.views(b.addr, b.length)]


def gather(mem: MemoryAccess, buffers: list[Buffer], offset: int, length: int) -> bytes:
    """``length`` bytes starting ``offset`` bytes into the concatenated buffers."""
    out = bytearray()
    for addr, take in _slices(buffers, offset, length):
        out += mem.read(addr, take)
    return bytes(out)


def scatter(mem: MemoryAccess, buffers: list[Buffer], offset: int, data: bytes) -> int:
    """Write ``data`` at ``offset`` into the concatenated buffers; bytes written."""
    done = 0
    for addr, take in _slices(buffers, offset, len(data)):
        mem.write(addr, data[done : done + take])
        done += take
    return done


def written_ranges(chain: Chain, written: int) -> Iterator[tuple[int, int]]:
    """(address, length) of the first ``written`` bytes of a chain's writable buffers."""
    return _slices(chain.writable, 0, written)


def _slices(buffers: list[Buffer], offset: int, length: int) -> Iterator[tuple[int, int]]:
    for buf in buffers:
        if length <= 0:
            return
        if offset >= buf.length:
            offset -= buf.length
            continue
        take = min(buf.length - offset, length)
        yield buf.addr + offset, take
        length -= take
        offset = 0


class SplitQueue:
    """One split virtqueue: ``pop`` chains the driver made available, ``push`` them back."""

    def __init__(
        self,
        mem: MemoryAccess,
        size: int,
        desc: int,
        avail: int,
        used: int,
        *,
        event_idx: bool = False,
        indirect: bool = True,
        last_avail_idx: int = 0,
        inflight: InflightQueue | None = None,
    ) -> None:
        if size > MAX_QUEUE_SIZE or not virtio.is_power_of_two(size):
            raise VirtqueueError(f"queue size {size} is not a power of two up to {MAX_QUEUE_SIZE}")
        self.mem = mem
        self.size = size
        self.place(desc, avail, used)
        self.event_idx = event_idx
        self.indirect = indirect
        self.last_avail_idx = last_avail_idx & INDEX_MASK
        self.used_idx = U16.unpack(self.mem.read(self._used_idx_at, _U16_SIZE))[0]
        self.inflight = inflight
        self.inuse = 0
        self.resubmit: list[int] = []
        """Heads to hand out again before new ones (in-flight at the last disconnect)."""
        self._signalled_used: int | None = None

    def place(self, desc: int, avail: int, used: int) -> None:
        """Where the ring's three parts are (again, after SET_VRING_ADDR or a new memory
        table); the addresses of the fields used on every request are worked out here."""
        self.desc, self.avail, self.used = desc, avail, used
        self._avail_idx_at = avail + virtio.RING_IDX_OFFSET
        self._avail_ring_at = avail + virtio.avail_entry_offset(0)
        self._used_event_at = avail + virtio.used_event_offset(self.size)
        self._used_idx_at = used + virtio.RING_IDX_OFFSET
        self._used_ring_at = used + virtio.used_elem_offset(0)
        self._avail_event_at = used + virtio.avail_event_offset(self.size)

    # -- the available side ----------------------------------------------------

    def avail_idx(self) -> int:
        return U16.unpack(self.mem.read(self._avail_idx_at, _U16_SIZE))[0]

    def pending(self) -> int:
        """Chains available and not yet popped."""
        count = (self.avail_idx() - self.last_avail_idx) & INDEX_MASK
        if count > self.size:
            raise VirtqueueError(
                f"avail idx {self.avail_idx()} is {count} ahead of {self.last_avail_idx}, "
                f"more than the {self.size} entries of the ring"
            )
        return count + len(self.resubmit)

    def pop(self) -> Chain | None:
        """The next available chain, or None when the ring is empty."""
        if self.resubmit:
            head = self.resubmit.pop(0)
            self.inuse += 1
            return self.read_chain(head)
        if self.pending() == 0:
            return None
        slot = self.last_avail_idx % self.size
        head = U16.unpack(self.mem.read(self._avail_ring_at + _U16_SIZE * slot, _U16_SIZE))[0]
        if head >= self.size:
            raise VirtqueueError(f"avail ring entry {slot} names descriptor {head} of {self.size}")
        chain = self.read_chain(head)
        self.last_avail_idx = (self.last_avail_idx + 1) & INDEX_MASK
        self.inuse += 1
        if self.event_idx:
            self._write_u16(self._avail_event_at, self.last_avail_idx)
        if self.inflight is not None:
            self.inflight.get(head)
        return chain

    def read_chain(self, head: int) -> Chain:
        """Walk a chain from its head, following one level of indirection."""
        chain = Chain(head)
        table, limit, index = self.desc, self.size, head
        seen = 0
        indirect_done = False
        while True:
            seen += 1
            if seen > limit:
                raise VirtqueueError(f"chain from descriptor {head} is longer than {limit}: loop")
            addr, length, flags, nxt = DESC.unpack(
                self.mem.read(table + DESC_SIZE * index, DESC_SIZE)
            )
            if flags & DESC_F_INDIRECT:
                if indirect_done or table != self.desc:
                    raise VirtqueueError("indirect descriptor inside an indirect table")
                if not self.indirect:
                    raise VirtqueueError(
                        "indirect descriptor but RING_INDIRECT_DESC not negotiated"
                    )
                if length == 0 or length % DESC_SIZE or length > DESC_SIZE * MAX_QUEUE_SIZE:
                    raise VirtqueueError(f"indirect table of {length} bytes")
                if flags & DESC_F_NEXT:
                    raise VirtqueueError("indirect descriptor with NEXT set")
                table, limit, index, seen, indirect_done = addr, length // DESC_SIZE, 0, 0, True
                continue
            chain.add(Buffer(addr, length), bool(flags & DESC_F_WRITE))
            if not flags & DESC_F_NEXT:
                return chain
            if nxt >= limit:
                raise VirtqueueError(f"descriptor {index} chains to {nxt}, beyond {limit}")
            index = nxt

    # -- the used side ---------------------------------------------------------

    def push(self, chain: Chain, written: int) -> None:
        """Return a chain to the driver with ``written`` bytes filled in."""
        slot = self.used_idx % self.size
        if self.inflight is not None:
            self.inflight.pre_put(chain.head)
        self._log_written(chain, written)
        entry = self._used_ring_at + _ELEM_SIZE * slot
        self.mem.write(entry, USED_ELEM.pack(chain.head, written))
        self.used_idx = (self.used_idx + 1) & INDEX_MASK
        self._write_u16(self._used_idx_at, self.used_idx)
        self.inuse = max(0, self.inuse - 1)
        if self.inflight is not None:
            self.inflight.post_put(chain.head, self.used_idx)

    def _log_written(self, chain: Chain, written: int) -> None:
        for addr, take in written_ranges(chain, written):
            self.mem.dirty(addr, take)

    def should_notify(self) -> bool:
        """Whether the driver wants an interrupt for what was pushed since the last one."""
        if not self.event_idx:
            return not U16.unpack(self.mem.read(self.avail, _U16_SIZE))[0] & AVAIL_F_NO_INTERRUPT
        old, new = self._signalled_used, self.used_idx
        self._signalled_used = new
        return old is None or need_event(
            U16.unpack(self.mem.read(self._used_event_at, _U16_SIZE))[0], new, old
        )

    def set_notification(self, enable: bool) -> None:
        """Ask the driver for kicks (or not), through avail_event or the used flags."""
        if self.event_idx:
            if enable:
                self._write_u16(self._avail_event_at, self.avail_idx())
            return
        flags = U16.unpack(self.mem.read(self.used, _U16_SIZE))[0]
        no_notify = virtio.USED_F_NO_NOTIFY
        flags = flags & ~no_notify if enable else flags | no_notify
        self._write_u16(self.used, flags)

    def _write_u16(self, addr: int, value: int) -> None:
        self.mem.write(addr, U16.pack(value & INDEX_MASK))

    def base(self) -> int:
        """GET_VRING_BASE's num: the next avail index."""
        return self.last_avail_idx
