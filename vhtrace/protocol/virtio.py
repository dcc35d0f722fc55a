"""Virtio ring, descriptor and inflight-area layouts and limits: the one place that knows them.

Pure: struct layouts, flag bits, sizes and offsets, and small helpers over them. Nothing
here maps memory or does I/O; the decoders in :mod:`vhtrace.memory` and the device side
in :mod:`mockbackend` read and write guest memory through these layouts.

Sources: the virtio 1.2 specification (little-endian everywhere; §2.7 split virtqueues,
§2.8 packed virtqueues) and, for the inflight area the vhost-user spec leaves to the
back-end, libvhost-user's ``VuVirtqInflight``/``VuDescStateSplit`` and QEMU's
docs/interop/vhost-user.rst ("Inflight I/O tracking") for the packed layout. What is a
vhost-user fact (the packed SET_VRING_BASE encoding, the ring count limit, the dirty-log
page) stays in :mod:`vhtrace.protocol.spec`.
"""

from __future__ import annotations

import struct

MAX_QUEUE_SIZE = 32768
"""§2.7: "The maximum Queue Size value is 32768" (split rings: also a power of 2);
§2.8: a packed ring's size is at most 2^15."""

INDEX_MASK = 0xFFFF
"""Split ring indices (avail.idx, used.idx) are free-running 16-bit counters."""

# -- descriptors (struct virtq_desc, struct pvirtq_desc) ------------------

DESC = struct.Struct("<QIHH")
"""Split: le64 addr, le32 len, le16 flags, le16 next. Packed: le64 addr, le32 len,
le16 id, le16 flags (same sizes, the last two fields swapped)."""
DESC_SIZE = DESC.size

DESC_F_NEXT = 0x1
"""VIRTQ_DESC_F_NEXT: the buffer continues via the next field (split) / next slot (packed)."""
DESC_F_WRITE = 0x2
"""VIRTQ_DESC_F_WRITE: device write-only (otherwise device read-only)."""
DESC_F_INDIRECT = 0x4
"""VIRTQ_DESC_F_INDIRECT: the buffer holds a table of descriptors."""
DESC_F_AVAIL = 1 << 7
"""Packed rings: VIRTQ_DESC_F_AVAIL, the driver's availability bit."""
DESC_F_USED = 1 << 15
"""Packed rings: VIRTQ_DESC_F_USED, the device's used bit."""

DESC_FLAG_NAMES = (
    (DESC_F_NEXT, "NEXT"),
    (DESC_F_WRITE, "WRITE"),
    (DESC_F_INDIRECT, "INDIRECT"),
    (DESC_F_AVAIL, "AVAIL"),
    (DESC_F_USED, "USED"),
)


def desc_flag_text(flags: int) -> str:
    """``NEXT|WRITE``, unknown bits in hex, ``-`` for none."""
    names = [name for bit, name in DESC_FLAG_NAMES if flags & bit]
    rest = flags & ~sum(bit for bit, _ in DESC_FLAG_NAMES)
    if rest:
        names.append(f"0x{rest:x}")
    return "|".join(names) or "-"


# -- split rings (§2.7: struct virtq_avail, struct virtq_used) -------------------

DESC_ALIGN = 16
AVAIL_ALIGN = 2
USED_ALIGN = 4
"""§2.7 table: alignment of the descriptor table, the available and the used ring."""

RING_HEADER = struct.Struct("<HH")
"""Both rings begin le16 flags, le16 idx."""
U16 = struct.Struct("<H")
"""An avail ring entry, a ring's flags or idx, used_event, avail_event."""
USED_ELEM = struct.Struct("<II")
"""struct virtq_used_elem: le32 id (of the chain's head), le32 len (bytes written)."""

AVAIL_F_NO_INTERRUPT = 0x1
"""VIRTQ_AVAIL_F_NO_INTERRUPT: the driver asks for no used-buffer notifications."""
USED_F_NO_NOTIFY = 0x1
"""VIRTQ_USED_F_NO_NOTIFY: the device asks for no available-buffer notifications."""

RING_IDX_OFFSET = 2
"""Offset of idx in both rings."""


def is_power_of_two(num: int) -> bool:
    return num > 0 and not num & (num - 1)


def desc_table_size(num: int) -> int:
    """§2.7 table: 16 * (Queue Size)."""
    return DESC_SIZE * num


def avail_size(num: int, event_idx: bool = True) -> int:
    """6 + 2 * (Queue Size) with used_event (VIRTIO_F_EVENT_IDX), 4 + 2 * num without."""
    return RING_HEADER.size + U16.size * num + (U16.size if event_idx else 0)


def used_size(num: int, event_idx: bool = True) -> int:
    """6 + 8 * (Queue Size) with avail_event (VIRTIO_F_EVENT_IDX), 4 + 8 * num without."""
    return RING_HEADER.size + USED_ELEM.size * num + (U16.size if event_idx else 0)


def split_ring_sizes(num: int, event_idx: bool = True) -> tuple[int, int, int]:
    """Bytes of the descriptor table, the available ring and the used ring."""
    return desc_table_size(num), avail_size(num, event_idx), used_size(num, event_idx)


def avail_entry_offset(slot: int) -> int:
    """Offset of ``ring[slot]`` in the available ring."""
    return RING_HEADER.size + U16.size * slot


def used_event_offset(num: int) -> int:
    """Offset of used_event, after the available ring's ``num`` entries."""
    return avail_entry_offset(num)


def used_elem_offset(slot: int) -> int:
    """Offset of ``ring[slot]`` in the used ring."""
    return RING_HEADER.size + USED_ELEM.size * slot


def avail_event_offset(num: int) -> int:
    """Offset of avail_event, after the used ring's ``num`` elements."""
    return used_elem_offset(num)


def need_event(event: int, new: int, old: int) -> bool:
    """The spec's vring_need_event: did the index cross ``event`` going from old to new?"""
    return (new - event - 1) & INDEX_MASK < (new - old) & INDEX_MASK


# -- packed rings (§2.8) -----------------------------------------------------------------

PACKED_DESC_LEN_ID = struct.Struct("<IH")
"""A pvirtq_desc's le32 len and le16 id, which the device writes into a used descriptor."""
PACKED_DESC_LEN_OFFSET = 8
PACKED_DESC_FLAGS_OFFSET = 14
"""Offsets of len and of flags in a pvirtq_desc."""

EVENT_ALIGN = 4
"""§2.8 table: the driver and device event suppression areas are 4-byte aligned."""
EVENT = struct.Struct("<HH")
"""struct pvirtq_event_suppress: le16 desc (off : 15, wrap : 1), le16 flags (2 bits)."""
EVENT_ENABLE = 0x0
EVENT_DISABLE = 0x1
EVENT_DESC = 0x2
"""RING_EVENT_FLAGS_ENABLE / _DISABLE / _DESC (notify at one descriptor)."""
EVENT_WRAP = 1 << 15
"""The wrap counter bit of an event's off_wrap."""


def event_off_wrap(off_wrap: int) -> tuple[int, bool]:
    """(descriptor offset, wrap counter) of an event suppression area's desc field."""
    return off_wrap & (EVENT_WRAP - 1), bool(off_wrap & EVENT_WRAP)


def packed_ring_sizes(num: int) -> tuple[int, int, int]:
    """Bytes of the descriptor ring (16 * Queue Size) and of the two event areas (4 each)."""
    return DESC_SIZE * num, EVENT.size, EVENT.size


def ring_sizes(num: int, packed: bool, event_idx: bool = True) -> tuple[int, int, int]:
    """Bytes of a ring's three parts, as SET_VRING_ADDR names them: desc, avail (packed:
    the driver event area), used (packed: the device event area)."""
    return packed_ring_sizes(num) if packed else split_ring_sizes(num, event_idx)


def packed_available(flags: int, wrap: bool) -> bool:
    """§2.8: available when AVAIL equals the driver's wrap counter and USED does not."""
    return bool(flags & DESC_F_AVAIL) == wrap and bool(flags & DESC_F_USED) != wrap


def packed_used(flags: int, wrap: bool) -> bool:
    """§2.8: used when AVAIL and USED both equal the wrap counter."""
    return bool(flags & DESC_F_AVAIL) == wrap and bool(flags & DESC_F_USED) == wrap


# -- the inflight area (GET/SET_INFLIGHT_FD) ----------------------------------------------

INFLIGHT_ALIGNMENT = 64
"""libvhost-user's INFLIGHT_ALIGNMENT: each queue's region starts 64-byte aligned."""
INFLIGHT_VERSION = 1
"""The version a back-end writes when it sets a queue's region up (0: not set up)."""

INFLIGHT_SPLIT_HEADER = struct.Struct("<QHHHH")
"""VuVirtqInflight: u64 features; u16 version; u16 desc_num; u16 last_batch_head;
u16 used_idx; then desc[desc_num]."""
INFLIGHT_SPLIT_DESC = struct.Struct("<B5xHQ")
"""VuDescStateSplit: u8 inflight; u8 padding[5]; u16 next; u64 counter."""
INFLIGHT_VERSION_OFFSET = 8
INFLIGHT_DESC_NUM_OFFSET = 10
INFLIGHT_LAST_BATCH_HEAD_OFFSET = 12
INFLIGHT_USED_IDX_OFFSET = 14
"""Offsets of version, desc_num, last_batch_head and used_idx in a split queue's header."""
INFLIGHT_COUNTER_OFFSET = 8
"""Offset of counter in a VuDescStateSplit (inflight is at 0)."""

INFLIGHT_PACKED_HEADER = struct.Struct("<QHHHHHHBB10x")
"""QEMU's packed layout: u64 features; u16 version; u16 desc_num; u16 free_head;
u16 old_free_head; u16 used_idx; u16 old_used_idx; u8 used_wrap_counter;
u8 old_used_wrap_counter; u8 padding[7]; then desc[] at 32 (its 8-byte alignment in C)."""
INFLIGHT_PACKED_DESC = struct.Struct("<BxHHHQHHIQ")
"""DescStatePacked: u8 inflight; u8 padding; u16 next; u16 last; u16 num; u64 counter;
u16 id; u16 flags; u32 len; u64 addr."""


def align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def inflight_queue_region_size(queue_size: int) -> int:
    """libvhost-user's ``vu_inflight_queue_size``: ALIGN_UP(sizeof(VuDescStateSplit) *
    queue_size + sizeof(uint16_t), 64), the bytes of one split queue's region (its
    16-byte header fits in the alignment slack)."""
    return align_up(INFLIGHT_SPLIT_DESC.size * queue_size + U16.size, INFLIGHT_ALIGNMENT)


def inflight_split_desc_offset(index: int) -> int:
    """Offset of ``desc[index]`` in a split queue's region."""
    return INFLIGHT_SPLIT_HEADER.size + INFLIGHT_SPLIT_DESC.size * index


def inflight_packed_desc_offset(index: int) -> int:
    """Offset of ``desc[index]`` in a packed queue's region."""
    return INFLIGHT_PACKED_HEADER.size + INFLIGHT_PACKED_DESC.size * index
