"""Split rings decoded from guest memory: indices, chains, indirect tables, hostile rings."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.memory.guest import F_INDIRECT, F_NEXT, F_WRITE, GuestRam, SplitLayout
from vhtrace.memory.plan import decode_ring, ring_buffers
from vhtrace.memory.split import decode_split

NUM = 8


def blk_ring() -> tuple[GuestRam, SplitLayout]:
    """Three requests as virtio-blk makes them: header (r), data, status (w)."""
    ram = GuestRam(0x20000)
    ring = SplitLayout(ram, NUM)
    # request 0 (done): desc 0 -> 1 -> 2, a read of 512 bytes
    ram.desc(ring.desc, 0, 0x8000, 16, F_NEXT, 1)
    ram.desc(ring.desc, 1, 0x9000, 512, F_NEXT | F_WRITE, 2)
    ram.desc(ring.desc, 2, 0x8010, 1, F_WRITE, 0)
    # request 1 (in flight): desc 3 points at an indirect table of 3 entries
    ram.desc(ring.desc, 3, 0xA000, 48, F_INDIRECT, 0)
    ram.desc(0xA000, 0, 0x8020, 16, F_NEXT, 1)
    ram.desc(0xA000, 1, 0xB000, 4096, F_NEXT, 2)
    ram.desc(0xA000, 2, 0x8030, 1, F_WRITE, 0)
    # request 2 (in flight): desc 4 alone
    ram.desc(ring.desc, 4, 0xC000, 100, 0, 0)
    ring.avail_ring(3, [0, 3, 4], used_event=1)
    ring.used_ring(1, [(0, 513)], avail_event=3)
    return ram, ring


def test_indices_in_flight_and_recent() -> None:
    ram, layout = blk_ring()
    ring = decode_split(ram, NUM, layout.desc, layout.avail, layout.used, event_idx=True)
    assert ring.problems == []
    assert (ring.avail_idx, ring.used_idx, ring.outstanding) == (3, 1, 2)
    assert (ring.used_event, ring.avail_event) == (1, 3)
    assert ring.pending() == [(1, 3), (2, 4)]
    assert ring.recent_used(5) == [(0, 0, 513)]


def test_chains_follow_next_and_expand_indirect_tables() -> None:
    ram, layout = blk_ring()
    ring = decode_split(ram, NUM, layout.desc, layout.avail, layout.used)
    direct = ring.chain(0, ram)
    assert [(d.addr, d.len, d.write) for d in direct.buffers] == [
        (0x8000, 16, False),
        (0x9000, 512, True),
        (0x8010, 1, True),
    ]
    assert (direct.out_bytes, direct.in_bytes, direct.problems) == (16, 513, [])
    indirect = ring.chain(3, ram)
    assert indirect.indirect is not None and indirect.indirect.addr == 0xA000
    assert [d.addr for d in indirect.buffers] == [0x8020, 0xB000, 0x8030]
    # a readable buffer after a writable one breaks the spec's order
    assert indirect.problems == []


def test_the_capture_plan_lists_pending_chains_first() -> None:
    ram, layout = blk_ring()
    config = {
        "index": 0,
        "num": NUM,
        "layout": "split",
        "event_idx": True,
        "indirect": True,
        "desc_gpa": layout.desc,
        "avail_gpa": layout.avail,
        "used_gpa": layout.used,
    }
    view = decode_ring(config, ram)
    wanted = ring_buffers(view, ram)
    assert wanted[:5] == [
        ("indirect:0", 0xA000, 48),
        ("buffer:0", 0x8020, 16),
        ("buffer:0", 0xB000, 4096),
        ("buffer:0", 0x8030, 1),
        ("buffer:0", 0xC000, 100),
    ]
    assert ("buffer:0", 0x9000, 512) in wanted


def test_hostile_chains_are_reported_not_followed() -> None:
    ram = GuestRam(0x20000)
    layout = SplitLayout(ram, NUM)
    ram.desc(layout.desc, 0, 0x8000, 16, F_NEXT, 1)
    ram.desc(layout.desc, 1, 0x8000, 16, F_NEXT, 0)  # loop 0 -> 1 -> 0
    ram.desc(layout.desc, 2, 0x8000, 16, F_NEXT, 200)  # next out of range
    ram.desc(layout.desc, 3, 0xA000, 32, F_INDIRECT | F_NEXT, 4)  # INDIRECT with NEXT
    ram.desc(0xA000, 0, 0xA000, 32, F_INDIRECT, 0)  # indirect inside indirect
    ram.desc(layout.desc, 4, 0x1F000, 16 * 100, F_INDIRECT, 0)  # longer than the queue
    ram.desc(layout.desc, 5, 0x7FFFFFFF0000, 64, F_INDIRECT, 0)  # not in memory
    ram.desc(layout.desc, 6, 0x8000, 16, F_WRITE | F_NEXT, 7)
    ram.desc(layout.desc, 7, 0x8000, 16, 0, 0)  # readable after writable
    layout.avail_ring(20, [0, 2, 3, 4, 5, 6, 9])  # 9: head out of range; 20 ahead of used
    layout.used_ring(0, [])
    ring = decode_split(ram, NUM, layout.desc, layout.avail, layout.used)
    assert any("ahead of used.idx" in p for p in ring.problems)
    assert any("head 9 out of range" in p for p in ring.problems)
    problems = {head: ring.chain(head, ram).problems for head in range(NUM)}
    assert any("loop" in p for p in problems[0])
    assert any("out of range" in p for p in problems[2])
    assert any("both INDIRECT and NEXT" in p for p in problems[3])
    assert any("INDIRECT inside an indirect table" in p for p in problems[3])
    assert any("more than the queue size" in p for p in problems[4])
    assert any("not in guest memory" in p for p in problems[5])
    assert any("device-readable after a device-writable" in p for p in problems[6])
    assert "not 16-byte aligned" not in str(ring.problems)
    assert ring.chain(9, ram).problems == [f"head 9 out of range (queue size {NUM})"]


def test_bad_queue_sizes_and_missing_tables() -> None:
    ram = GuestRam(0x1000)
    assert decode_split(ram, 0, 0, 0, 0).problems == ["queue size 0"]
    odd = decode_split(ram, 6, 0x10, 0x100, 0x200)
    assert any("not a power of 2" in p for p in odd.problems)
    far = decode_split(ram, 256, 0x100000, 0x3, 0x102)
    assert any("descriptor table" in p for p in far.problems)
    assert any("avail 0x3 not 2-byte aligned" in p for p in far.problems)
    assert any("used 0x102 not 4-byte aligned" in p for p in far.problems)
    huge = decode_split(ram, 1 << 20, 0, 0, 0)
    assert huge.num == 32768 and any("above 32768" in p for p in huge.problems)


def test_a_table_chained_end_to_end_costs_a_bounded_number_of_steps() -> None:
    num = 1024
    ram = GuestRam(0x100000)
    layout = SplitLayout(ram, num, desc=0x10000, avail=0x20000, used=0x30000)
    for i in range(num):
        ram.desc(layout.desc, i, 0x40000, 16, F_NEXT, (i + 1) % num)
    layout.avail_ring(num, list(range(num)))
    layout.used_ring(0, [])
    config = {
        "index": 0,
        "num": num,
        "layout": "split",
        "desc_gpa": layout.desc,
        "avail_gpa": layout.avail,
        "used_gpa": layout.used,
    }
    view = decode_ring(config, ram)
    ring_buffers(view, ram)
    assert view.steps <= 5 * num  # not num * num
    assert view.exhausted and any("step budget" in p for p in view.problems)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=0x3000), st.sampled_from([1, 2, 4, 8, 16, 3]))
def test_random_memory_never_crashes_the_decoder(blob: bytes, num: int) -> None:
    ram = GuestRam(0x3000)
    ram.write(0, blob)
    ring = decode_split(ram, num, 0x0, 0x1000, 0x2000, event_idx=True)
    for head in range(num):
        chain = ring.chain(head, ram)
        assert len(chain.buffers) <= 2 * num
    config = {
        "index": 0,
        "num": num,
        "layout": "split",
        "desc_gpa": 0,
        "avail_gpa": 0x1000,
        "used_gpa": 0x2000,
        "event_idx": True,
    }
    view = decode_ring(config, ram)
    assert isinstance(ring_buffers(view, ram), list)


def test_layout_sizes_match_the_spec() -> None:
    ram, layout = blk_ring()
    data = ram.read(layout.used, 4 + 8 * NUM + 2)
    assert data is not None and struct.unpack_from("<HH", data) == (0, 1)
