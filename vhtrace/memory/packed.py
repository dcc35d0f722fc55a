"""Packed virtqueues decoded from guest memory (pure, bounded).

Layout (virtio 1.1): one descriptor ring ``{le64 addr; le32 len; le16 id; le16
flags}[num]``, plus the driver and device event suppression areas ``{le16
off_wrap; le16 flags}``. SET_VRING_ADDR carries them as desc, avail (driver
area) and used (device area). A descriptor is available to the device when its
AVAIL bit equals the driver's wrap counter and its USED bit does not; chains
are runs of consecutive descriptors with NEXT set.

Where the device stands comes from the vring base (GET/SET_VRING_BASE with the
packed encoding): last avail index and wrap counter, used index and wrap
counter. Given it, the decoder lists the chains the device took and has not
marked used (in flight) and the chains available after it (pending).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vhtrace.memory.descriptors import (
    Chain,
    Desc,
    MemoryReader,
    parse_packed_descs,
    read_indirect,
)
from vhtrace.protocol import spec, virtio
from vhtrace.protocol.virtio import DESC_F_INDIRECT, DESC_F_NEXT, DESC_SIZE, EVENT, MAX_QUEUE_SIZE


@dataclass(frozen=True, slots=True)
class PackedBase:
    """A packed vring base: where the device is (from GET/SET_VRING_BASE)."""

    avail_idx: int
    avail_wrap: bool
    used_idx: int
    used_wrap: bool

    @classmethod
    def from_num(cls, num: int) -> PackedBase:
        return cls(*spec.packed_vring_base(num))


@dataclass(slots=True)
class PackedRing:
    num: int
    descs: list[Desc] = field(default_factory=list)
    driver_event: tuple[int, int] | None = None
    """(off_wrap, flags) of the driver event suppression area."""
    device_event: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)

    def is_available(self, desc: Desc, wrap: bool) -> bool:
        return virtio.packed_available(desc.flags, wrap)

    def is_used(self, desc: Desc, wrap: bool) -> bool:
        return virtio.packed_used(desc.flags, wrap)


def decode_packed(
    memory: MemoryReader, num: int, desc: int, driver: int, device: int
) -> PackedRing:
    """Read a packed ring whose parts are at these guest-physical addresses."""
    problems: list[str] = []
    size = min(max(num, 0), MAX_QUEUE_SIZE)
    if num <= 0:
        problems.append("queue size 0")
    elif num > MAX_QUEUE_SIZE:
        problems.append(f"queue size {num} above {MAX_QUEUE_SIZE}: decoding {MAX_QUEUE_SIZE}")
    ring = PackedRing(size, problems=problems)
    if size == 0:
        return ring
    if desc % virtio.DESC_ALIGN:
        problems.append(f"desc 0x{desc:x} not {virtio.DESC_ALIGN}-byte aligned")
    data = memory.read(desc, DESC_SIZE * size)
    if data is None:
        problems.append(f"descriptor ring 0x{desc:x} not in guest memory")
    else:
        ring.descs = parse_packed_descs(data, size)
    for name, addr in (("driver", driver), ("device", device)):
        area = memory.read(addr, EVENT.size)
        if area is None:
            problems.append(f"{name} event area 0x{addr:x} not in guest memory")
            continue
        value = EVENT.unpack(area)
        if name == "driver":
            ring.driver_event = value
        else:
            ring.device_event = value
    return ring


def walk_packed(
    ring: PackedRing,
    memory: MemoryReader,
    start: int,
    wrap: bool,
    limit: int | None = None,
    available_only: bool = True,
) -> tuple[list[Chain], list[str]]:
    """Chains from slot ``start`` with wrap counter ``wrap``, at most ``limit`` slots.

    With ``available_only`` the walk stops at the first descriptor not available
    to the device; otherwise it walks ``limit`` slots whatever their flags."""
    chains: list[Chain] = []
    problems: list[str] = []
    num = ring.num
    if num == 0 or len(ring.descs) < num:
        return chains, problems
    if start >= num:
        problems.append(f"position {start} out of range (queue size {num})")
        return chains, problems
    budget = num if limit is None else min(limit, num)
    slot, steps = start, 0
    chain: Chain | None = None
    while steps < budget:
        desc = ring.descs[slot]
        if chain is None:
            if available_only and not ring.is_available(desc, wrap):
                break
            chain = Chain(slot)
        steps += 1
        if desc.flags & DESC_F_INDIRECT:
            if chain.indirect is not None or chain.buffers:
                chain.problems.append(f"desc {slot}: indirect table not alone in its chain")
            chain.indirect = desc
            chain.buffers.extend(read_indirect(memory, desc, num, True, chain.problems))
        else:
            chain.buffers.append(desc)
        slot += 1
        if slot == num:
            slot, wrap = 0, not wrap
        if not desc.flags & DESC_F_NEXT:
            chains.append(chain)
            chain = None
    if chain is not None:
        chain.problems.append("chain runs past the walked slots (NEXT on its last descriptor)")
        chains.append(chain)
    return chains, problems


def slots_between(start: int, start_wrap: bool, stop: int, stop_wrap: bool, num: int) -> int:
    """Slots from (start, wrap) to (stop, wrap) going forward (0..num)."""
    if num == 0:
        return 0
    distance = (stop - start) % num
    if distance == 0 and start_wrap != stop_wrap:
        return num
    return distance
