"""The inflight area (GET/SET_INFLIGHT_FD) decoded from its bytes (pure, bounded).

The area is shared between the back-end and the front-end so that a back-end
that crashes and reconnects can resubmit what it had taken from the rings and
not completed. The spec leaves its layout to the back-end; the one in use is
libvhost-user's, which the spec also describes (docs/interop/vhost-user.rst,
"Inflight I/O tracking"). Checked against libvhost-user's sources:

* one queue region per queue, queue ``i`` at ``i * vu_inflight_queue_size(qs)``
  where ``vu_inflight_queue_size(qs) = ALIGN_UP(sizeof(VuDescStateSplit) * qs +
  sizeof(uint16_t), 64)`` (INFLIGHT_ALIGNMENT 64); the 16-byte region header
  fits in the alignment slack;
* split region (``VuVirtqInflight``): ``u64 features; u16 version; u16
  desc_num; u16 last_batch_head; u16 used_idx;`` then ``VuDescStateSplit
  desc[desc_num]`` = ``{u8 inflight; u8 padding[5]; u16 next; u64 counter}``;
* packed region (spec only, libvhost-user has none): ``u64 features; u16
  version; u16 desc_num; u16 free_head; u16 old_free_head; u16 used_idx; u16
  old_used_idx; u8 used_wrap_counter; u8 old_used_wrap_counter; u8 padding[7];``
  then 32-byte ``DescStatePacked`` entries (at offset 32, the C alignment).
  No implementation fixes the packed region size: it is taken as
  ``mmap_size / num_queues``.

On reconnect libvhost-user writes ``desc[last_batch_head].inflight = 0`` when
the saved used_idx differs from the ring's: a ``last_batch_head >= desc_num``
makes that an out-of-bounds write into the shared area (bad-inputs #16).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

INFLIGHT_ALIGNMENT = 64
SPLIT_HEADER = 16
SPLIT_DESC = 16
PACKED_HEADER = 32
PACKED_DESC = 32
VERSION = 1
MAX_QUEUES = 0x8000
MAX_QUEUE_SIZE = 32768


def align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def queue_region_size(queue_size: int) -> int:
    """libvhost-user's ``vu_inflight_queue_size``: bytes per split queue region."""
    return align_up(SPLIT_DESC * queue_size + 2, INFLIGHT_ALIGNMENT)


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
    if num_queues > MAX_QUEUES:
        problems.append(f"{num_queues} queues: decoding the first {MAX_QUEUES}")
        num_queues = MAX_QUEUES
    if queue_size > MAX_QUEUE_SIZE:
        problems.append(f"queue size {queue_size} above {MAX_QUEUE_SIZE}")
        queue_size = MAX_QUEUE_SIZE
    if packed:
        size = len(data) // num_queues
        needed = PACKED_HEADER + PACKED_DESC * queue_size
    else:
        size = queue_region_size(queue_size)
        needed = SPLIT_HEADER + SPLIT_DESC * queue_size
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
    if queue.version != VERSION:
        queue.problems.append(f"version {queue.version}, expected {VERSION}")
    if queue.desc_num != queue_size:
        queue.problems.append(f"desc_num {queue.desc_num}, the queue size is {queue_size}")
    count = min(queue.desc_num, capacity)
    if queue.desc_num > capacity:
        queue.problems.append(
            f"desc_num {queue.desc_num} does not fit the region ({capacity} descriptors)"
        )
    return count


def _split_queue(index: int, offset: int, region: bytes, queue_size: int) -> InflightQueue:
    if len(region) < SPLIT_HEADER:
        return InflightQueue(index, offset, 0, 0, 0, 0, problems=["region too small"])
    features, version, desc_num, last_batch_head, used_idx = struct.unpack_from("<QHHHH", region)
    queue = InflightQueue(index, offset, features, version, desc_num, used_idx, last_batch_head)
    count = _check_header(queue, queue_size, (len(region) - SPLIT_HEADER) // SPLIT_DESC)
    if queue.initialised and last_batch_head >= desc_num:
        queue.batch_head_out_of_range = True
        queue.problems.append(
            f"last_batch_head {last_batch_head} >= desc_num {desc_num}: on reconnect "
            "libvhost-user writes desc[last_batch_head] out of bounds (bad-inputs #16)"
        )
    for i in range(count):
        flag, nxt, counter = struct.unpack_from("<B5xHQ", region, SPLIT_HEADER + SPLIT_DESC * i)
        if flag == 1:
            queue.inflight.append(InflightDesc(i, counter, nxt))
        elif flag:
            queue.problems.append(f"desc[{i}].inflight = {flag}, expected 0 or 1")
    queue.inflight.sort(key=lambda d: (d.counter, d.index))
    return queue


def _packed_queue(index: int, offset: int, region: bytes, queue_size: int) -> InflightQueue:
    if len(region) < PACKED_HEADER:
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
    ) = struct.unpack_from("<QHHHHHHBB", region)
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
    count = _check_header(queue, queue_size, (len(region) - PACKED_HEADER) // PACKED_DESC)
    if queue.initialised:
        for name, value in (("free_head", free_head), ("old_free_head", old_free_head)):
            if value >= max(desc_num, 1):
                queue.problems.append(f"{name} {value} >= desc_num {desc_num}")
    for i in range(count):
        at = PACKED_HEADER + PACKED_DESC * i
        flag, nxt, last, num, counter, ident, flags, length, addr = struct.unpack_from(
            "<BxHHHQHHIQ", region, at
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
