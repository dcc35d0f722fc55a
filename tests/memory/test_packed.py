"""Packed rings: availability by wrap counters, chains, the vring base encoding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.memory.guest import F_AVAIL, F_INDIRECT, F_NEXT, F_USED, F_WRITE, GuestRam
from vhtrace.memory.packed import PackedBase, decode_packed, slots_between, walk_packed
from vhtrace.memory.plan import decode_ring, packed_chains, ring_buffers

NUM = 4
DESC, DRIVER, DEVICE = 0x1000, 0x2000, 0x2100


def ring_ram() -> GuestRam:
    """Slot 0: used (wrap 1). Slots 1-2: one chain the device took. Slot 3: available."""
    ram = GuestRam(0x10000)
    used = F_AVAIL | F_USED
    ram.packed_desc(DESC, 0, 0x8000, 16, 7, used)
    ram.packed_desc(DESC, 1, 0x8100, 16, 0, F_AVAIL | F_NEXT)
    ram.packed_desc(DESC, 2, 0x9000, 512, 1, F_AVAIL | F_WRITE)
    ram.packed_desc(DESC, 3, 0xA000, 32, 2, F_AVAIL | F_INDIRECT)
    ram.packed_desc(0xA000, 0, 0x8200, 16, 0, 0)
    ram.packed_desc(0xA000, 1, 0xB000, 4096, 0, F_WRITE)
    ram.write(DRIVER, bytes([3, 0x80, 1, 0]))  # off_wrap 0x8003, flags 1 (disable)
    ram.write(DEVICE, bytes([0, 0, 0, 0]))
    return ram


def test_the_packed_vring_base_encoding() -> None:
    base = PackedBase.from_num(3 | 1 << 15 | 1 << 16 | 1 << 31)
    assert base == PackedBase(3, True, 1, True)


def test_available_and_in_flight_chains() -> None:
    ram = ring_ram()
    ring = decode_packed(ram, NUM, DESC, DRIVER, DEVICE)
    assert ring.problems == [] and ring.driver_event == (0x8003, 1)
    pending, problems = walk_packed(ring, ram, 3, True)
    assert problems == [] and len(pending) == 1
    assert pending[0].indirect is not None
    assert [(d.addr, d.write) for d in pending[0].buffers] == [(0x8200, False), (0xB000, True)]
    taken, _ = walk_packed(ring, ram, 1, True, limit=2, available_only=False)
    assert [[d.addr for d in c.buffers] for c in taken] == [[0x8100, 0x9000]]
    assert slots_between(1, True, 3, True, NUM) == 2
    assert slots_between(3, True, 3, False, NUM) == NUM


def test_the_ring_view_uses_the_back_ends_base() -> None:
    ram = ring_ram()
    config = {
        "index": 1,
        "num": NUM,
        "layout": "packed",
        "desc_gpa": DESC,
        "avail_gpa": DRIVER,
        "used_gpa": DEVICE,
        "started": False,
        "last_base": 3 | 1 << 15 | 1 << 16 | 1 << 31,
    }
    view = decode_ring(config, ram)
    in_flight, pending = packed_chains(view, ram)
    assert [c.head for c in in_flight] == [1] and [c.head for c in pending] == [3]
    wanted = ring_buffers(view, ram)
    assert ("buffer:1", 0x9000, 512) in wanted and ("indirect:1", 0xA000, 32) in wanted
    assert ("buffer:1", 0x8000, 16) in wanted  # loose: an old, used descriptor


def test_a_chain_running_off_the_walk_is_reported() -> None:
    ram = GuestRam(0x10000)
    for slot in range(NUM):
        ram.packed_desc(DESC, slot, 0x8000, 16, slot, F_AVAIL | F_NEXT)
    ring = decode_packed(ram, NUM, DESC, DRIVER, DEVICE)
    chains, _ = walk_packed(ring, ram, 0, True)
    assert len(chains) == 1 and len(chains[0].buffers) == NUM
    assert "runs past" in chains[0].problems[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=0x1000), st.integers(0, 7), st.booleans(), st.sampled_from([1, 4, 64]))
def test_random_packed_rings_never_crash(blob: bytes, start: int, wrap: bool, num: int) -> None:
    ram = GuestRam(0x3000)
    ram.write(0, blob)
    ring = decode_packed(ram, num, 0, 0x2000, 0x2004)
    chains, _ = walk_packed(ring, ram, start, wrap)
    assert sum(len(c.buffers) for c in chains) <= num * (num + 1)
    config = {
        "index": 0,
        "num": num,
        "layout": "packed",
        "desc_gpa": 0,
        "avail_gpa": 0x2000,
        "used_gpa": 0x2004,
        "base": start | wrap << 15,
    }
    view = decode_ring(config, ram)
    assert isinstance(ring_buffers(view, ram), list)
