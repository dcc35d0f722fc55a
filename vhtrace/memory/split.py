"""Split virtqueues decoded from guest memory (pure, bounded).

Layout (virtio 1.x, little-endian): the descriptor table (16 bytes per entry),
the driver's avail ring ``{le16 flags; le16 idx; le16 ring[num]; le16
used_event}`` and the device's used ring ``{le16 flags; le16 idx; {le32 id;
le32 len} ring[num]; le16 avail_event}``; the trailing event fields are there
with VIRTIO_F_EVENT_IDX. Indices are free-running 16-bit counters.

What a developer chasing a stuck queue wants from it: the indices, which
requests the driver made available that the device has not used yet (and,
given the back-end's own position from GET/SET_VRING_BASE, which of those the
back-end took), the most recent completions, and every descriptor chain.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vhtrace.memory.descriptors import (
    Chain,
    Desc,
    MemoryReader,
    parse_split_descs,
    walk_split_chain,
)
from vhtrace.protocol import virtio
from vhtrace.protocol.virtio import (
    INDEX_MASK,
    MAX_QUEUE_SIZE,
    RING_HEADER,
    U16,
    USED_ELEM,
    avail_size,
    desc_table_size,
    used_size,
)


@dataclass(slots=True)
class SplitRing:
    """What one split ring held."""

    num: int
    event_idx: bool
    table: list[Desc] = field(default_factory=list)
    avail_flags: int | None = None
    avail_idx: int | None = None
    avail_ring: list[int] = field(default_factory=list)
    used_event: int | None = None
    used_flags: int | None = None
    used_idx: int | None = None
    used_ring: list[tuple[int, int]] = field(default_factory=list)
    """(id, len) per slot."""
    avail_event: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def outstanding(self) -> int | None:
        """Requests made available and not used yet: avail.idx - used.idx."""
        if self.avail_idx is None or self.used_idx is None:
            return None
        return (self.avail_idx - self.used_idx) & INDEX_MASK

    def avail_entries(self, start: int, stop: int) -> list[tuple[int, int]]:
        """(free-running position, head) of avail entries start..stop-1 (at most num)."""
        if not self.avail_ring:
            return []
        count = min((stop - start) & INDEX_MASK, self.num)
        return [
            ((start + i) & INDEX_MASK, self.avail_ring[(start + i) % self.num])
            for i in range(count)
        ]

    def pending(self) -> list[tuple[int, int]]:
        """(position, head) of the requests the device has not used yet."""
        if self.avail_idx is None or self.used_idx is None:
            return []
        return self.avail_entries(self.used_idx, self.avail_idx)

    def recent_used(self, count: int) -> list[tuple[int, int, int]]:
        """(position, id, len) of the last ``count`` used entries, newest first."""
        if self.used_idx is None or not self.used_ring:
            return []
        count = min(count, self.num, self.used_idx if self.used_idx < self.num else self.num)
        out = []
        for back in range(1, count + 1):
            position = (self.used_idx - back) & INDEX_MASK
            ident, length = self.used_ring[position % self.num]
            out.append((position, ident, length))
        return out

    def chain(self, head: int, memory: MemoryReader, indirect_ok: bool = True) -> Chain:
        return walk_split_chain(self.table, head, memory, self.num, indirect_ok)


def check_num(num: int, problems: list[str]) -> int:
    """The queue size to decode with (0 if hopeless); problems noted."""
    if num <= 0:
        problems.append("queue size 0")
        return 0
    if num > MAX_QUEUE_SIZE:
        problems.append(f"queue size {num} above {MAX_QUEUE_SIZE}: decoding {MAX_QUEUE_SIZE}")
        return MAX_QUEUE_SIZE
    if num & (num - 1):
        problems.append(f"queue size {num} is not a power of 2 (split rings need one)")
    return num


def decode_split(
    memory: MemoryReader, num: int, desc: int, avail: int, used: int, event_idx: bool = False
) -> SplitRing:
    """Read a split ring whose parts are at these guest-physical addresses."""
    problems: list[str] = []
    num = check_num(num, problems)
    ring = SplitRing(num, event_idx, problems=problems)
    if num == 0:
        return ring
    alignments = (
        ("desc", desc, virtio.DESC_ALIGN),
        ("avail", avail, virtio.AVAIL_ALIGN),
        ("used", used, virtio.USED_ALIGN),
    )
    for name, addr, align in alignments:
        if addr % align:
            problems.append(f"{name} 0x{addr:x} not {align}-byte aligned")
    data = memory.read(desc, desc_table_size(num))
    if data is None:
        problems.append(
            f"descriptor table 0x{desc:x} ({desc_table_size(num)} bytes) not in guest memory"
        )
    else:
        ring.table = parse_split_descs(data, num)
    data = memory.read(avail, avail_size(num, event_idx))
    if data is None:
        problems.append(f"avail ring 0x{avail:x} not in guest memory")
    else:
        ring.avail_flags, ring.avail_idx = RING_HEADER.unpack_from(data)
        ring.avail_ring = list(struct.unpack_from(f"<{num}H", data, virtio.avail_entry_offset(0)))
        if event_idx:
            ring.used_event = U16.unpack_from(data, virtio.used_event_offset(num))[0]
    data = memory.read(used, used_size(num, event_idx))
    if data is None:
        problems.append(f"used ring 0x{used:x} not in guest memory")
    else:
        ring.used_flags, ring.used_idx = RING_HEADER.unpack_from(data)
        ring.used_ring = list(
            USED_ELEM.iter_unpack(data[virtio.used_elem_offset(0) :][: USED_ELEM.size * num])
        )
        if event_idx:
            ring.avail_event = U16.unpack_from(data, virtio.avail_event_offset(num))[0]
    _check_indices(ring)
    return ring


def _check_indices(ring: SplitRing) -> None:
    problems, num = ring.problems, ring.num
    outstanding = ring.outstanding
    if outstanding is not None and outstanding > num:
        problems.append(
            f"avail.idx {ring.avail_idx} is {outstanding} ahead of used.idx {ring.used_idx}: "
            f"more than the queue size {num}"
        )
    for position, head in ring.pending():
        if head >= num:
            problems.append(f"avail[{position % num}] (idx {position}): head {head} out of range")
    for position, ident, _ in ring.recent_used(num):
        if ident >= num:
            problems.append(f"used[{position % num}] (idx {position}): id {ident} out of range")
