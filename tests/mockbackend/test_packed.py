"""Packed rings over a bytearray: availability by wrap counter, used marking, wrapping."""

from __future__ import annotations

import struct

import pytest

from mockbackend.packed import PackedQueue
from mockbackend.virtqueue import Buffer, VirtqueueError
from tests.mockbackend.test_virtqueue import FakeMemory

# virtio 1.2, 2.8.x: packed descriptor flags, written out here to check the code's
F_NEXT, F_WRITE, F_INDIRECT, F_AVAIL, F_USED = 1, 2, 4, 1 << 7, 1 << 15

SIZE = 4
RING, DRIVER, DEVICE, DATA = 0x1000, 0x2000, 0x3000, 0x8000


def put(
    mem: FakeMemory,
    slot: int,
    addr: int,
    length: int,
    buffer_id: int,
    flags: int,
    wrap: bool = True,
) -> None:
    flags |= F_AVAIL if wrap else F_USED
    mem.write(RING + 16 * slot, struct.pack("<QIHH", addr, length, buffer_id, flags))


def used(mem: FakeMemory, slot: int) -> tuple[int, int, int]:
    _, length, buffer_id, flags = struct.unpack_from("<QIHH", mem.ram, RING + 16 * slot)
    return buffer_id, length, flags


def queue(mem: FakeMemory, **kwargs: object) -> PackedQueue:
    return PackedQueue(mem, SIZE, RING, DRIVER, DEVICE, **kwargs)  # type: ignore[arg-type]


def test_chain_is_popped_and_marked_used_in_its_first_slot() -> None:
    mem = FakeMemory()
    put(mem, 0, DATA, 16, 0, F_NEXT)
    put(mem, 1, DATA + 16, 100, 7, F_WRITE)
    q = queue(mem)
    chain = q.pop()
    assert chain is not None
    assert (chain.head, chain.count) == (7, 2)
    assert chain.readable == [Buffer(DATA, 16)] and chain.writable == [Buffer(DATA + 16, 100)]
    assert q.pop() is None
    q.push(chain, 100)
    assert used(mem, 0) == (7, 100, F_AVAIL | F_USED | F_WRITE)
    assert q.base() == 2 | 1 << 15 | 2 << 16 | 1 << 31  # avail 2/wrap 1, used 2/wrap 1


def test_wrap_counters_flip_at_the_end_of_the_ring() -> None:
    mem = FakeMemory()
    q = queue(mem, base=3 | 1 << 15 | 3 << 16 | 1 << 31)
    put(mem, 3, DATA, 4, 1, F_WRITE)
    first = q.pop()
    assert first is not None and q.avail_wrap is False
    q.push(first, 4)
    assert q.used_wrap is False and used(mem, 3)[2] & (F_AVAIL | F_USED) == F_AVAIL | F_USED
    put(mem, 0, DATA, 4, 2, F_WRITE, wrap=False)  # the driver's second lap
    second = q.pop()
    assert second is not None and second.head == 2
    q.push(second, 0)
    assert used(mem, 0)[2] & (F_AVAIL | F_USED) == 0  # used wrap counter 0


def test_a_descriptor_of_the_previous_lap_is_not_available() -> None:
    mem = FakeMemory()
    put(mem, 0, DATA, 4, 1, F_WRITE, wrap=False)
    assert queue(mem).pop() is None


def test_indirect_table_and_hostile_forms() -> None:
    mem = FakeMemory()
    table = 0x5000
    put(mem, 0, table, 32, 9, F_INDIRECT)
    mem.write(table, struct.pack("<QIHH", DATA, 16, 0, 0))
    mem.write(table + 16, struct.pack("<QIHH", DATA + 16, 1, 0, F_WRITE))
    chain = queue(mem).pop()
    assert chain is not None and chain.head == 9 and chain.count == 1
    assert chain.writable == [Buffer(DATA + 16, 1)]

    bad = FakeMemory()
    put(bad, 0, table, 24, 9, F_INDIRECT)
    with pytest.raises(VirtqueueError, match="indirect table of 24"):
        queue(bad).pop()
    loop = FakeMemory()
    for slot in range(SIZE):
        put(loop, slot, DATA, 1, 0, F_NEXT)
    with pytest.raises(VirtqueueError):
        queue(loop).pop()


def test_event_suppression() -> None:
    mem = FakeMemory()
    for slot in range(3):
        put(mem, slot, DATA, 4, slot, F_WRITE)
    q = queue(mem, event_idx=True)
    mem.write(DRIVER, struct.pack("<HH", 0, 1))  # disabled
    chain = q.pop()
    assert chain is not None
    q.push(chain, 4)
    assert not q.should_notify()
    mem.write(DRIVER, struct.pack("<HH", 0x8000 | 2, 2))  # desc mode: after slot 2, wrap 1
    chain = q.pop()
    assert chain is not None
    q.push(chain, 4)
    assert not q.should_notify()
    chain = q.pop()
    assert chain is not None
    q.push(chain, 4)
    assert q.should_notify()
