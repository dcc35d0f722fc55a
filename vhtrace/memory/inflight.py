"""The inflight area (GET/SET_INFLIGHT_FD) decoded from its bytes (pure, bounded).

The area is shared between the back-end and the front-end so that a back-end
that crashes and reconnects can resubmit what it had taken from the rings and
not completed. The spec leaves its layout to the back-end; the one in use is
libvhost-user's, which the spec also describes (docs/interop/vhost-user.rst,
"Inflight I/O tracking"); its layouts are in :mod:`vhtrace.protocol.virtio`. One
region per queue: split regions are ``vu_inflight_queue_size(queue_size)`` bytes
apart; no implementation fixes the packed region size, so it is taken as
``mmap_size / num_queues``.

On reconnect libvhost-user writes ``desc[last_batch_head].inflight = 0`` when
the saved used_idx differs from the ring's: a ``last_batch_head >= desc_num``
makes that an out-of-bounds write into the shared area (bad-inputs #16).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vhtrace.protocol import spec, virtio
from vhtrace.protocol.virtio import (
    INFLIGHT_PACKED_DESC,
    INFLIGHT_PACKED_HEADER,
    INFLIGHT_SPLIT_DESC,
    INFLIGHT_SPLIT_HEADER,
    MAX_QUEUE_SIZE,
)


@dataclass(slots=True)
class InflightDesc:
    """A descriptor the back-end had taken and not completed."""

    index: int
    counter: int
    next: int
    packed: dict[str, int] | None = None
    """Packed rings: id, flags, len, addr, last, num of the saved descriptor."""


@dataclass(slots=True)
class InflightQueue:
    index: int
    offset: int
    features: int
    version: int
    desc_num: int
    used_idx: int
    last_batch_head: int | None = None
    """Split rings."""
    packed_state: dict[str, int] | None = None
    """Packed rings: free_head, old_free_head, old_used_idx, the wrap counters."""
    inflight: list[InflightDesc] = field(default_factory=list)
    """Heads still in flight, in the order the back-end took them (by counter)."""
    problems: list[str] = field(default_factory=list)
    batch_head_out_of_range: bool = False
    """last_batch_head >= desc_num: the hazard of bad-inputs #16."""

    @property
    def initialised(self) -> bool:
        """Version 0 means the back-end has not set the region up (or the VM was reset)."""
        return self.version != 0


@dataclass(slots=True)
class InflightArea:
    queues: list[InflightQueue] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    region_size: int = 0


def decode_inflight(
    data: bytes, num_queues: int, queue_size: int, packed: bool = False
) -> InflightArea:
    """Decode the queue regions of an inflight area (``data`` = the area's bytes)."""
    area = InflightArea()
    problems = area.problems
    if num_queues <= 0 or queue_size <= 0:
        problems.append(f"{num_queues} queues of size {queue_size}: nothing to decode")
        return area
    if num_queues > spec.MAX_VRINGS:
        problems.append(f"{num_queues} queues: decoding the first {spec.MAX_VRINGS}")
        num_queues = spec.MAX_VRINGS
    if queue_size > MAX_QUEUE_SIZE:
        problems.append(f"queue size {queue_size} above {MAX_QUEUE_SIZE}")
        queue_size = MAX_QUEUE_SIZE
    if packed:
        size = len(data) // num_queues
        needed = virtio.inflight_packed_desc_offset(queue_size)
    else:
        size = virtio.inflight_queue_region_size(queue_size)
        needed = virtio.inflight_split_desc_offset(queue_size)
    area.region_size = size
    if size < needed:
        problems.append(
            f"queue regions of {size} bytes, {needed} needed for {queue_size} descriptors"
        )
    fitting = min(num_queues, len(data) // size) if size else 0
    if fitting < num_queues:
        problems.append(
            f"area of {len(data)} bytes holds {fitting} of {num_queues} queue "
            f"regions of {size} bytes"
        )
    for index in range(fitting):
        region = data[index * size : (index + 1) * size]
        decoder = _packed_queue if packed else _split_queue
        area.queues.append(decoder(index, index * size, region, queue_size))
    return area


def _check_header(queue: InflightQueue, queue_size: int, capacity: int) -> int:
    """How many descriptor states to read; problems noted."""
    if not queue.initialised:
        return 0
    if queue.version != virtio.INFLIGHT_VERSION:
        queue.problems.append(f"version {queue.version}, expected {virtio.INFLIGHT_VERSION}")
    if queue.desc_num != queue_size:
        queue.problems.append(f"desc_num {queue.desc_num}, the queue size is {queue_size}")
    count = min(queue.desc_num, capacity)
    if queue.desc_num > capacity:
        queue.problems.append(
            f"desc_num {queue.desc_num} does not fit the region ({capacity} descriptors)"
        )
    return count


def _split_queue(index: int, offset: int, region: bytes, queue_size: int) -> InflightQueue:
    if len(region) < INFLIGHT_SPLIT_HEADER.size:
        return InflightQueue(index, offset, 0, 0, 0, 0, problems=["region too small"])
    features, version, desc_num, last_batch_head, used_idx = INFLIGHT_SPLIT_HEADER.unpack_from(
        region
    )
    queue = InflightQueue(index, offset, features, version, desc_num, used_idx, last_batch_head)
    capacity = (len(region) - INFLIGHT_SPLIT_HEADER.size) // INFLIGHT_SPLIT_DESC.size
    count = _check_header(queue, queue_size, capacity)
    if queue.initialised and last_batch_head >= desc_num:
        queue.batch_head_out_of_range = True
        queue.problems.append(
            f"last_batch_head {last_batch_head} >= desc_num {desc_num}: on reconnect "
            "libvhost-user writes desc[last_batch_head] out of bounds (bad-inputs #16)"
        )
    for i in range(count):
        at = virtio.inflight_split_desc_offset(i)
        flag, nxt, counter = INFLIGHT_SPLIT_DESC.unpack_from(region, at)
        if flag == 1:
            queue.inflight.append(InflightDesc(i, counter, nxt))
        elif flag:
            queue.problems.append(f"desc[{i}].inflight = {flag}, expected 0 or 1")
    queue.inflight.sort(key=lambda d: (d.counter, d.index))
    return queue


def _packed_queue(index: int, offset: int, region: bytes, queue_size: int) -> InflightQueue:
    if len(region) < INFLIGHT_PACKED_HEADER.size:
        return InflightQueue(index, offset, 0, 0, 0, 0, problems=["region too small"])
    (
        features,
        version,
        desc_num,
        free_head,
        old_free_head,
        used_idx,
        old_used_idx,
        used_wrap,
        old_used_wrap,
    ) = INFLIGHT_PACKED_HEADER.unpack_from(region)
    queue = InflightQueue(
        index,
        offset,
        features,
        version,
        desc_num,
        used_idx,
        packed_state={
            "free_head": free_head,
            "old_free_head": old_free_head,
            "old_used_idx": old_used_idx,
            "used_wrap_counter": used_wrap,
            "old_used_wrap_counter": old_used_wrap,
        },
    )
    capacity = (len(region) - INFLIGHT_PACKED_HEADER.size) // INFLIGHT_PACKED_DESC.size
    count = _check_header(queue, queue_size, capacity)
    if queue.initialised:
        for name, value in (("free_head", free_head), ("old_free_head", old_free_head)):
            if value >= max(desc_num, 1):
                queue.problems.append(f"{name} {value} >= desc_num {desc_num}")
    for i in range(count):
        at = virtio.inflight_packed_desc_offset(i)
        flag, nxt, last, num, counter, ident, flags, length, addr = (
            INFLIGHT_PACKED_DESC.unpack_from(region, at)
        )
        if flag == 1:
            saved = {
                "id": ident,
                "flags": flags,
                "len": length,
                "addr": addr,
                "last": last,
                "num": num,
            }
            queue.inflight.append(InflightDesc(i, counter, nxt, saved))
        elif flag:
            queue.problems.append(f"desc[{i}].inflight = {flag}, expected 0 or 1")
    queue.inflight.sort(key=lambda d: (d.counter, d.index))
    return queue
