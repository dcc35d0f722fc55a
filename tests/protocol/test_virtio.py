"""The virtio layouts against the virtio 1.2 spec's wording, bytes written out by hand.

Every expected value here is copied from the spec's structs and tables (§2.7 split
virtqueues, §2.8 packed virtqueues; all fields little-endian) or from libvhost-user's
inflight structs, never computed with the module under test.
"""

from __future__ import annotations

import pytest

from vhtrace.protocol import virtio


def test_descriptor_flag_bits_are_the_specs() -> None:
    # #define VIRTQ_DESC_F_NEXT 1 / VIRTQ_DESC_F_WRITE 2 / VIRTQ_DESC_F_INDIRECT 4
    # #define VIRTQ_DESC_F_AVAIL (1 << 7) / VIRTQ_DESC_F_USED (1 << 15)
    assert (virtio.DESC_F_NEXT, virtio.DESC_F_WRITE, virtio.DESC_F_INDIRECT) == (1, 2, 4)
    assert (virtio.DESC_F_AVAIL, virtio.DESC_F_USED) == (0x80, 0x8000)
    assert virtio.desc_flag_text(0x8083) == "NEXT|WRITE|AVAIL|USED"
    assert virtio.desc_flag_text(0x100) == "0x100" and virtio.desc_flag_text(0) == "-"


def test_split_descriptor_bytes() -> None:
    # struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; };
    raw = bytes.fromhex("8877665544332211 ccbbaa99 0300 0500".replace(" ", ""))
    assert virtio.DESC_SIZE == 16
    assert virtio.DESC.unpack(raw) == (0x1122334455667788, 0x99AABBCC, 3, 5)
    assert virtio.DESC.pack(0x1122334455667788, 0x99AABBCC, 3, 5) == raw


def test_packed_descriptor_bytes_and_the_fields_a_device_writes() -> None:
    # struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; };
    raw = bytes.fromhex("0010000000000000 00020000 0700 8080".replace(" ", ""))
    addr, length, ident, flags = virtio.DESC.unpack(raw)
    assert (addr, length, ident, flags) == (0x1000, 0x200, 7, 0x8080)
    at = virtio.PACKED_DESC_LEN_OFFSET
    assert virtio.PACKED_DESC_LEN_ID.unpack_from(raw, at) == (0x200, 7)
    assert virtio.U16.unpack_from(raw, virtio.PACKED_DESC_FLAGS_OFFSET) == (0x8080,)


def test_queue_size_limit() -> None:
    # "Queue Size value is always a power of 2. The maximum Queue Size value is 32768."
    assert virtio.MAX_QUEUE_SIZE == 32768
    assert virtio.is_power_of_two(32768) and virtio.is_power_of_two(1)
    assert not virtio.is_power_of_two(0) and not virtio.is_power_of_two(100)


@pytest.mark.parametrize("num", [1, 8, 256, 32768])
def test_split_ring_sizes_follow_the_specs_table(num: int) -> None:
    # | Descriptor Table | 16 | 16 * (Queue Size) |
    # | Available Ring   |  2 | 6 + 2 * (Queue Size) |
    # | Used Ring        |  4 | 6 + 8 * (Queue Size) |
    assert virtio.split_ring_sizes(num) == (16 * num, 6 + 2 * num, 6 + 8 * num)
    # used_event / avail_event are there "Only if VIRTIO_F_EVENT_IDX"
    assert virtio.split_ring_sizes(num, event_idx=False) == (16 * num, 4 + 2 * num, 4 + 8 * num)
    assert (virtio.DESC_ALIGN, virtio.AVAIL_ALIGN, virtio.USED_ALIGN) == (16, 2, 4)


def test_available_ring_bytes() -> None:
    # struct virtq_avail { le16 flags; le16 idx; le16 ring[Queue Size]; le16 used_event; };
    # flags NO_INTERRUPT, idx 3, ring [4, 5, 6, 7], used_event 2 (Queue Size 4)
    raw = bytes.fromhex("0100 0300 0400 0500 0600 0700 0200".replace(" ", ""))
    assert virtio.AVAIL_F_NO_INTERRUPT == 1
    assert virtio.RING_HEADER.unpack_from(raw) == (1, 3)
    assert virtio.U16.unpack_from(raw, virtio.RING_IDX_OFFSET) == (3,)
    assert virtio.U16.unpack_from(raw, virtio.avail_entry_offset(2)) == (6,)
    assert virtio.used_event_offset(4) == 12
    assert virtio.U16.unpack_from(raw, virtio.used_event_offset(4)) == (2,)


def test_used_ring_bytes() -> None:
    # struct virtq_used { le16 flags; le16 idx; struct virtq_used_elem ring[Queue Size];
    #                     le16 avail_event; };
    # struct virtq_used_elem { le32 id; le32 len; };
    # flags NO_NOTIFY, idx 1, ring [(id 9, len 0x200), (0, 0)], avail_event 1 (Queue Size 2)
    raw = bytes.fromhex("0100 0100 09000000 00020000 00000000 00000000 0100".replace(" ", ""))
    assert virtio.USED_F_NO_NOTIFY == 1
    assert virtio.USED_ELEM.size == 8
    assert virtio.USED_ELEM.unpack_from(raw, virtio.used_elem_offset(0)) == (9, 0x200)
    assert virtio.avail_event_offset(2) == 20
    assert virtio.U16.unpack_from(raw, virtio.avail_event_offset(2)) == (1,)


@pytest.mark.parametrize(
    ("event", "new", "old", "expected"),
    [
        (0, 1, 0, True),  # the driver asked to hear of entry 0; it was just used
        (5, 3, 2, False),  # not there yet
        (2, 4, 2, True),  # crossed by a batch of two
        (1, 4, 2, False),  # already crossed before this batch
        (0xFFFF, 0, 0xFFFE, True),  # across the 16-bit wrap
    ],
)
def test_need_event_is_vring_need_event(event: int, new: int, old: int, expected: bool) -> None:
    # return (u16)(new_idx - event_idx - 1) < (u16)(new_idx - old_idx);
    assert virtio.need_event(event, new, old) is expected


def test_event_suppression_bytes() -> None:
    # struct pvirtq_event_suppress { le16 { desc_event_off : 15; desc_event_wrap : 1; } desc;
    #                                le16 { desc_event_flags : 2, reserved : 14; } flags; };
    # #define RING_EVENT_FLAGS_ENABLE 0x0 / _DISABLE 0x1 / _DESC 0x2
    raw = bytes.fromhex("0380 0200")
    off_wrap, flags = virtio.EVENT.unpack(raw)
    assert virtio.event_off_wrap(off_wrap) == (3, True)
    assert flags == virtio.EVENT_DESC == 2
    assert (virtio.EVENT_ENABLE, virtio.EVENT_DISABLE) == (0, 1)
    assert virtio.event_off_wrap(0x7FFF) == (0x7FFF, False)


def test_packed_ring_sizes_follow_the_specs_table() -> None:
    # | Descriptor Ring | 16 | 16 * (Queue Size) |
    # | Device Event Suppression | 4 | 4 |   | Driver Event Suppression | 4 | 4 |
    assert virtio.packed_ring_sizes(256) == (4096, 4, 4)
    assert virtio.ring_sizes(256, packed=True) == (4096, 4, 4)
    assert virtio.ring_sizes(256, packed=False) == (4096, 518, 2054)
    assert virtio.EVENT_ALIGN == 4


@pytest.mark.parametrize("wrap", [False, True])
def test_packed_available_and_used(wrap: bool) -> None:
    # "the driver sets the VIRTQ_DESC_F_AVAIL bit to match the Driver Ring Wrap Counter and
    # the VIRTQ_DESC_F_USED bit to the inverse"; the device sets both to its wrap counter.
    driver = (0x80 if wrap else 0) | (0 if wrap else 0x8000)
    device = 0x8080 if wrap else 0
    assert virtio.packed_available(driver, wrap) and not virtio.packed_used(driver, wrap)
    assert virtio.packed_used(device, wrap) and not virtio.packed_available(device, wrap)
    assert not virtio.packed_available(driver, not wrap)


def test_inflight_split_layout_is_libvhost_users() -> None:
    # typedef struct VuVirtqInflight { uint64_t features; uint16_t version;
    #     uint16_t desc_num; uint16_t last_batch_head; uint16_t used_idx;
    #     VuDescStateSplit desc[]; } VuVirtqInflight;
    header = bytes.fromhex("0100000000000000 0100 8000 0500 0900".replace(" ", ""))
    assert virtio.INFLIGHT_SPLIT_HEADER.unpack(header) == (1, 1, 128, 5, 9)
    assert virtio.U16.unpack_from(header, virtio.INFLIGHT_VERSION_OFFSET) == (1,)
    assert virtio.U16.unpack_from(header, virtio.INFLIGHT_DESC_NUM_OFFSET) == (128,)
    assert virtio.U16.unpack_from(header, virtio.INFLIGHT_LAST_BATCH_HEAD_OFFSET) == (5,)
    assert virtio.U16.unpack_from(header, virtio.INFLIGHT_USED_IDX_OFFSET) == (9,)
    # typedef struct VuDescStateSplit { uint8_t inflight; uint8_t padding[5];
    #     uint16_t next; uint64_t counter; } VuDescStateSplit;
    state = bytes.fromhex("01 0000000000 0201 0a00000000000000".replace(" ", ""))
    assert virtio.INFLIGHT_SPLIT_DESC.unpack(state) == (1, 0x0102, 10)
    assert virtio.INFLIGHT_COUNTER_OFFSET == 8
    assert virtio.inflight_split_desc_offset(2) == 16 + 2 * 16
    assert virtio.INFLIGHT_VERSION == 1 and virtio.INFLIGHT_ALIGNMENT == 64


def test_inflight_queue_region_size_is_vu_inflight_queue_size() -> None:
    # ALIGN_UP(sizeof(VuDescStateSplit) * queue_size + sizeof(uint16_t), INFLIGHT_ALIGNMENT)
    assert virtio.inflight_queue_region_size(128) == 2112  # 2050 rounded up to 64
    assert virtio.inflight_queue_region_size(256) == 4160
    assert virtio.inflight_queue_region_size(1) == 64
    # the 16-byte header always fits in the slack (the mock relies on it)
    sizes = range(1, virtio.MAX_QUEUE_SIZE + 1)
    assert all(virtio.inflight_queue_region_size(q) >= 16 + 16 * q for q in sizes)


def test_inflight_packed_layout() -> None:
    # u64 features; u16 version; u16 desc_num; u16 free_head; u16 old_free_head;
    # u16 used_idx; u16 old_used_idx; u8 used_wrap_counter; u8 old_used_wrap_counter;
    # u8 padding[7]; then DescStatePacked desc[] (8-byte aligned: at 32)
    header = bytes.fromhex(
        "0200000000000000 0100 0400 0100 0200 0300 0400 01 00 00000000000000 000000".replace(
            " ", ""
        )
    )
    assert virtio.INFLIGHT_PACKED_HEADER.size == 32
    assert virtio.INFLIGHT_PACKED_HEADER.unpack(header) == (2, 1, 4, 1, 2, 3, 4, 1, 0)
    # u8 inflight; u8 padding; u16 next; u16 last; u16 num; u64 counter;
    # u16 id; u16 flags; u32 len; u64 addr;
    desc = bytes.fromhex(
        "01 00 0300 0400 0100 0500000000000000 0700 8080 00020000 0010000000000000".replace(" ", "")
    )
    assert virtio.INFLIGHT_PACKED_DESC.size == 32
    assert virtio.INFLIGHT_PACKED_DESC.unpack(desc) == (1, 3, 4, 1, 5, 7, 0x8080, 0x200, 0x1000)
    assert virtio.inflight_packed_desc_offset(1) == 64
