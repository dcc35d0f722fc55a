"""The inflight area, in libvhost-user's layout (split) and the spec's (packed)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from vhtrace.memory.inflight import decode_inflight
from vhtrace.protocol.virtio import inflight_queue_region_size as queue_region_size

SPLIT_HEADER, SPLIT_DESC = 16, 16
"""VuVirtqInflight's header and a VuDescStateSplit, in bytes."""
PACKED_HEADER, PACKED_DESC = 32, 32
"""The packed header (29 bytes, desc[] 8-byte aligned) and a DescStatePacked, in bytes."""


def split_area(num_queues: int, queue_size: int) -> bytearray:
    return bytearray(queue_region_size(queue_size) * num_queues)


def set_header(
    area: bytearray,
    queue: int,
    queue_size: int,
    *,
    version: int = 1,
    desc_num: int | None = None,
    last_batch_head: int = 0,
    used_idx: int = 0,
) -> int:
    base = queue * queue_region_size(queue_size)
    desc_num = queue_size if desc_num is None else desc_num
    struct.pack_into("<QHHHH", area, base, 0, version, desc_num, last_batch_head, used_idx)
    return base


def set_desc(area: bytearray, base: int, index: int, inflight: int, counter: int) -> None:
    struct.pack_into("<B5xHQ", area, base + SPLIT_HEADER + SPLIT_DESC * index, inflight, 0, counter)


def test_libvhost_user_queue_region_size() -> None:
    # ALIGN_UP(sizeof(VuDescStateSplit) * qs + sizeof(uint16_t), 64)
    assert queue_region_size(128) == 2112
    assert queue_region_size(256) == 4160
    assert queue_region_size(1) == 64
    # the 16-byte header always fits in the slack
    assert all(queue_region_size(q) >= 16 + 16 * q for q in range(1, 1025))


def test_in_flight_heads_in_the_order_they_were_taken() -> None:
    area = split_area(2, 128)
    base = set_header(area, 1, 128, used_idx=9, last_batch_head=5)
    set_desc(area, base, 7, 1, 42)
    set_desc(area, base, 3, 1, 41)
    set_desc(area, base, 4, 0, 40)
    decoded = decode_inflight(bytes(area), 2, 128)
    assert decoded.problems == []
    first, second = decoded.queues
    assert not first.initialised and first.inflight == []
    assert second.offset == 2112 and second.used_idx == 9 and second.last_batch_head == 5
    assert [(d.index, d.counter) for d in second.inflight] == [(3, 41), (7, 42)]
    assert second.problems == []


def test_last_batch_head_beyond_desc_num_is_bad_input_16() -> None:
    area = split_area(1, 128)
    set_header(area, 0, 128, last_batch_head=128)
    queue = decode_inflight(bytes(area), 1, 128).queues[0]
    assert queue.batch_head_out_of_range
    assert any("last_batch_head 128 >= desc_num 128" in p for p in queue.problems)


def test_inconsistent_headers_are_reported() -> None:
    area = split_area(1, 64)
    base = set_header(area, 0, 64, version=3, desc_num=1000)
    set_desc(area, base, 2, 7, 0)
    queue = decode_inflight(bytes(area), 1, 64).queues[0]
    text = " ".join(queue.problems)
    assert "version 3" in text and "desc_num 1000" in text and "does not fit" in text
    assert "inflight = 7" in text


def test_an_area_too_small_for_its_queues() -> None:
    decoded = decode_inflight(bytes(100), 4, 128)
    assert decoded.queues == []
    assert "holds 0 of 4 queue regions" in decoded.problems[0]
    assert decode_inflight(b"", 0, 0).problems


def test_packed_regions() -> None:
    size = PACKED_HEADER + PACKED_DESC * 4
    area = bytearray(size * 2)
    struct.pack_into("<QHHHHHHBB", area, size, 0, 1, 4, 9, 1, 2, 2, 1, 1)
    struct.pack_into(
        "<BxHHHQHHIQ",
        area,
        size + PACKED_HEADER + PACKED_DESC * 1,
        1,
        0,
        1,
        2,
        5,
        11,
        0x2,
        512,
        0x9000,
    )
    decoded = decode_inflight(bytes(area), 2, 4, packed=True)
    queue = decoded.queues[1]
    assert queue.packed_state is not None and queue.packed_state["used_wrap_counter"] == 1
    assert any("free_head 9 >= desc_num 4" in p for p in queue.problems)
    (desc,) = queue.inflight
    assert desc.index == 1 and desc.packed == {
        "id": 11,
        "flags": 2,
        "len": 512,
        "addr": 0x9000,
        "last": 1,
        "num": 2,
    }


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000), st.integers(0, 70000), st.integers(0, 70000), st.booleans())
def test_random_areas_never_crash(blob: bytes, queues: int, size: int, packed: bool) -> None:
    decoded = decode_inflight(blob, queues, size, packed=packed)
    assert len(decoded.queues) <= max(queues, 0)
