"""Packed virtqueues (VIRTIO_F_RING_PACKED): one descriptor ring shared both ways.

The driver marks a descriptor available by setting its AVAIL flag to its wrap counter
and USED to the opposite; the device marks the chain used by writing id, length and
AVAIL = USED = its own wrap counter into the slot of the chain's first descriptor, then
skips as many slots as the chain took. ``avail`` and ``used`` addresses of
SET_VRING_ADDR point to the driver's and the device's event suppression areas
(u16 off_wrap, u16 flags). Same interface as :class:`mockbackend.virtqueue.SplitQueue`;
there is no in-flight tracking for packed rings (libvhost-user's packed layout differs).
"""

from __future__ import annotations

from mockbackend.virtqueue import (
    Buffer,
    Chain,
    MemoryAccess,
    VirtqueueError,
    written_ranges,
)
from vhtrace.protocol import spec, virtio
from vhtrace.protocol.virtio import (
    DESC,
    DESC_F_AVAIL,
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_USED,
    DESC_F_WRITE,
    DESC_SIZE,
    EVENT,
    MAX_QUEUE_SIZE,
)


class PackedQueue:
    """One packed virtqueue, device side."""

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
        base: int = 0,
    ) -> None:
        if size == 0 or size > MAX_QUEUE_SIZE:
            raise VirtqueueError(f"queue size {size} is outside 1..{MAX_QUEUE_SIZE}")
        self.mem, self.size = mem, size
        self.place(desc, avail, used)
        self.event_idx, self.indirect = event_idx, indirect
        # QEMU sets only the avail half at start (used = avail there).
        self.last_avail_idx, avail_wrap, _, _ = spec.packed_vring_base(base)
        self.avail_wrap = avail_wrap or base == 0
        self.used_idx, self.used_wrap = self.last_avail_idx, self.avail_wrap
        if self.last_avail_idx >= size:
            raise VirtqueueError(f"base {self.last_avail_idx} beyond the ring of {size}")
        self.inflight = None
        self.inuse = 0
        self.resubmit: list[int] = []
        self._signalled: int | None = None

    def place(self, desc: int, avail: int, used: int) -> None:
        """Where the descriptor ring and the driver's (``avail``) and the device's
        (``used``) event suppression areas are (again, after SET_VRING_ADDR)."""
        self.desc, self.avail, self.used = desc, avail, used

    def _read(self, table: int, index: int) -> tuple[int, int, int, int]:
        return DESC.unpack(self.mem.read(table + DESC_SIZE * index, DESC_SIZE))

    def pending(self) -> int:
        """1 if a chain is available at the current position (a packed ring does not
        tell how many without walking it), else 0."""
        flags = self._read(self.desc, self.last_avail_idx)[3]
        return int(virtio.packed_available(flags, self.avail_wrap))

    def pop(self) -> Chain | None:
        if not self.pending():
            return None
        chain = Chain(0)
        index, wrap, count = self.last_avail_idx, self.avail_wrap, 0
        while True:
            addr, length, buffer_id, flags = self._read(self.desc, index)
            if count and not virtio.packed_available(flags, wrap):
                raise VirtqueueError(f"chain continues into descriptor {index}, not available")
            count += 1
            if count > self.size:
                raise VirtqueueError("chain longer than the ring: loop")
            if flags & DESC_F_INDIRECT:
                self._indirect(chain, addr, length, count, flags)
            else:
                chain.add(Buffer(addr, length), bool(flags & DESC_F_WRITE))
            index += 1
            if index == self.size:
                index, wrap = 0, not wrap
            if not flags & DESC_F_NEXT or flags & DESC_F_INDIRECT:
                break
        chain.head, chain.count = buffer_id, count
        self.last_avail_idx, self.avail_wrap = index, wrap
        self.inuse += 1
        return chain

    def _indirect(self, chain: Chain, addr: int, length: int, count: int, flags: int) -> None:
        if count > 1 or flags & DESC_F_NEXT:
            raise VirtqueueError("indirect descriptor inside a chain")
        if not self.indirect:
            raise VirtqueueError("indirect descriptor without RING_INDIRECT_DESC")
        if length == 0 or length % DESC_SIZE or length > DESC_SIZE * MAX_QUEUE_SIZE:
            raise VirtqueueError(f"indirect table of {length} bytes")
        for i in range(length // DESC_SIZE):
            iaddr, ilen, _, iflags = self._read(addr, i)
            if iflags & DESC_F_INDIRECT:
                raise VirtqueueError("indirect descriptor inside an indirect table")
            chain.add(Buffer(iaddr, ilen), bool(iflags & DESC_F_WRITE))

    def push(self, chain: Chain, written: int) -> None:
        """Mark the chain used with ``written`` bytes, in the next used slot."""
        for addr, take in written_ranges(chain, written):
            self.mem.dirty(addr, take)
        flags = (DESC_F_AVAIL | DESC_F_USED) if self.used_wrap else 0
        if written:
            flags |= DESC_F_WRITE
        slot = self.desc + DESC_SIZE * self.used_idx
        self.mem.write(
            slot + virtio.PACKED_DESC_LEN_OFFSET,
            virtio.PACKED_DESC_LEN_ID.pack(written, chain.head),
        )
        flags_at = slot + virtio.PACKED_DESC_FLAGS_OFFSET
        self.mem.write(flags_at, virtio.U16.pack(flags))  # flags last: now it is used
        self.used_idx += chain.count
        if self.used_idx >= self.size:
            self.used_idx -= self.size
            self.used_wrap = not self.used_wrap
        self.inuse = max(0, self.inuse - 1)

    def should_notify(self) -> bool:
        """The driver's event suppression: always, never, or past an event index."""
        off_wrap, flags = EVENT.unpack(self.mem.read(self.avail, EVENT.size))
        old, self._signalled = self._signalled, self.used_idx
        if flags == virtio.EVENT_DISABLE:
            return False
        if flags != virtio.EVENT_DESC or not self.event_idx or old is None:
            return True
        offset, wrap = virtio.event_off_wrap(off_wrap)
        if wrap != self.used_wrap:
            offset -= self.size
        return virtio.need_event(offset, self.used_idx, old)

    def set_notification(self, enable: bool) -> None:
        self.mem.write(
            self.used, EVENT.pack(0, virtio.EVENT_ENABLE if enable else virtio.EVENT_DISABLE)
        )

    def base(self) -> int:
        """GET_VRING_BASE's num in the packed encoding."""
        return spec.packed_vring_num(
            self.last_avail_idx, self.avail_wrap, self.used_idx, self.used_wrap
        )
