"""Split-ring processing over a bytearray: chains, indirect tables, event idx, hostile rings."""

from __future__ import annotations

import os
import struct

import pytest

from mockbackend.inflight import InflightArea
from mockbackend.virtqueue import Buffer, SplitQueue, VirtqueueError, gather, scatter

# virtio 1.2, 2.7.5: split descriptor flags, written out here to check the code's
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4

SIZE = 8
DESC, AVAIL, USED, DATA = 0x1000, 0x2000, 0x3000, 0x8000


class FakeMemory:
    """Guest memory as a bytearray; records dirtied ranges."""

    def __init__(self, size: int = 0x20000) -> None:
        self.ram = bytearray(size)
        self.dirtied: list[tuple[int, int]] = []

    def _check(self, gpa: int, length: int) -> None:
        if gpa < 0 or gpa + length > len(self.ram):
            from mockbackend.memory import AccessError

            raise AccessError(f"{gpa:#x}+{length}")

    def read(self, gpa: int, length: int) -> bytes:
        self._check(gpa, length)
        return bytes(self.ram[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        self._check(gpa, len(data))
        self.ram[gpa : gpa + len(data)] = data

    def views(self, gpa: int, length: int) -> list[memoryview]:
        self._check(gpa, length)
        return [memoryview(self.ram)[gpa : gpa + length]]

    def dirty(self, gpa: int, length: int) -> None:
        self.dirtied.append((gpa, length))


def desc(
    mem: FakeMemory,
    index: int,
    addr: int,
    length: int,
    flags: int = 0,
    nxt: int = 0,
    table: int = DESC,
) -> None:
    mem.write(table + 16 * index, struct.pack("<QIHH", addr, length, flags, nxt))


def offer(mem: FakeMemory, *heads: int, start: int = 0) -> None:
    for i, head in enumerate(heads):
        mem.write(AVAIL + 4 + 2 * ((start + i) % SIZE), struct.pack("<H", head))
    mem.write(AVAIL + 2, struct.pack("<H", (start + len(heads)) & 0xFFFF))


def queue(mem: FakeMemory, **kwargs: object) -> SplitQueue:
    return SplitQueue(mem, SIZE, DESC, AVAIL, USED, **kwargs)  # type: ignore[arg-type]


def test_pop_collects_readable_then_writable_buffers_and_push_fills_used_ring() -> None:
    mem = FakeMemory()
    desc(mem, 0, DATA, 16, F_NEXT, 1)
    desc(mem, 1, DATA + 16, 512, F_WRITE | F_NEXT, 2)
    desc(mem, 2, DATA + 528, 1, F_WRITE)
    offer(mem, 0)
    q = queue(mem)
    chain = q.pop()
    assert chain is not None
    assert chain.head == 0
    assert chain.readable == [Buffer(DATA, 16)]
    assert chain.writable == [Buffer(DATA + 16, 512), Buffer(DATA + 528, 1)]
    assert q.pop() is None
    q.push(chain, 513)
    assert struct.unpack_from("<HHII", mem.ram, USED) == (0, 1, 0, 513)
    assert (DATA + 16, 512) in mem.dirtied and (DATA + 528, 1) in mem.dirtied


def test_a_placed_again_ring_goes_on_at_its_new_addresses() -> None:
    mem = FakeMemory()
    desc(mem, 0, DATA, 4, F_WRITE)
    offer(mem, 0)
    q = queue(mem, event_idx=True)
    first = q.pop()
    assert first is not None
    q.push(first, 4)
    moved = 0x10000  # the driver's rings, copied where the front-end now says they are
    for part in (DESC, AVAIL, USED):
        mem.write(moved + part, mem.read(part, 0x1000))
    q.place(moved + DESC, moved + AVAIL, moved + USED)
    desc(mem, 1, DATA + 4, 8, F_WRITE, table=moved + DESC)
    mem.write(moved + AVAIL + 4 + 2 * 1, struct.pack("<H", 1))
    mem.write(moved + AVAIL + 2, struct.pack("<H", 2))
    second = q.pop()
    assert second is not None and second.writable == [Buffer(DATA + 4, 8)]
    q.push(second, 8)
    # used idx 2 and used[1] = (1, 8) at the new place; avail_event after used[SIZE]
    assert struct.unpack_from("<H", mem.ram, moved + USED + 2) == (2,)
    assert struct.unpack_from("<II", mem.ram, moved + USED + 4 + 8) == (1, 8)
    assert struct.unpack_from("<H", mem.ram, moved + USED + 4 + 8 * SIZE) == (2,)
    assert struct.unpack_from("<H", mem.ram, USED + 2) == (1,)  # the old place is left alone


def test_indirect_table_is_followed() -> None:
    mem = FakeMemory()
    table = 0x5000
    desc(mem, 0, table, 32, F_INDIRECT)
    desc(mem, 0, DATA, 16, F_NEXT, 1, table=table)
    desc(mem, 1, DATA + 16, 4, F_WRITE, table=table)
    offer(mem, 0)
    chain = queue(mem).pop()
    assert chain is not None
    assert chain.readable == [Buffer(DATA, 16)] and chain.writable == [Buffer(DATA + 16, 4)]


@pytest.mark.parametrize(
    ("setup", "complaint"),
    [
        (lambda m: desc(m, 0, DATA, 1, F_NEXT, 0), "loop"),
        (lambda m: desc(m, 0, DATA, 1, F_NEXT, SIZE), "beyond"),
        (lambda m: desc(m, 0, 0x5000, 24, F_INDIRECT), "indirect table of 24"),
        (lambda m: desc(m, 0, 0x5000, 0, F_INDIRECT), "indirect table of 0"),
        (
            lambda m: (
                desc(m, 0, 0x5000, 16, F_INDIRECT),
                desc(m, 0, 0x6000, 16, F_INDIRECT, table=0x5000),
            ),
            "inside an indirect",
        ),
        (
            lambda m: (desc(m, 0, DATA, 1, F_WRITE | F_NEXT, 1), desc(m, 1, DATA, 1)),
            "readable buffer after",
        ),
    ],
    ids=[
        "self-loop",
        "next-out-of-table",
        "indirect-size",
        "indirect-empty",
        "nested-indirect",
        "order",
    ],
)
def test_hostile_chains_are_refused(setup, complaint: str) -> None:
    mem = FakeMemory()
    setup(mem)
    offer(mem, 0)
    with pytest.raises(VirtqueueError, match=complaint):
        queue(mem).pop()


def test_head_beyond_the_table_and_avail_jump_are_refused() -> None:
    mem = FakeMemory()
    offer(mem, SIZE + 3)
    with pytest.raises(VirtqueueError, match="names descriptor"):
        queue(mem).pop()
    mem.write(AVAIL + 2, struct.pack("<H", SIZE + 1))
    with pytest.raises(VirtqueueError, match="ahead"):
        queue(mem).pending()


def test_indirect_refused_unless_negotiated() -> None:
    mem = FakeMemory()
    desc(mem, 0, 0x5000, 16, F_INDIRECT)
    offer(mem, 0)
    with pytest.raises(VirtqueueError, match="RING_INDIRECT_DESC"):
        queue(mem, indirect=False).pop()


def test_wraparound_of_the_free_running_indices() -> None:
    mem = FakeMemory()
    desc(mem, 0, DATA, 4, F_WRITE)
    mem.write(USED + 2, struct.pack("<H", 0xFFFF))
    offer(mem, 0, start=0xFFFF)  # avail idx wraps to 0
    q = queue(mem, last_avail_idx=0xFFFF)
    chain = q.pop()
    assert chain is not None and q.last_avail_idx == 0
    q.push(chain, 4)
    assert q.used_idx == 0
    assert struct.unpack_from("<H", mem.ram, USED + 2)[0] == 0


def test_event_idx_notifies_only_when_the_driver_asked() -> None:
    mem = FakeMemory()
    for i in range(3):
        desc(mem, i, DATA + 16 * i, 4, F_WRITE)
    offer(mem, 0, 1, 2)
    q = queue(mem, event_idx=True)
    mem.write(AVAIL + 4 + 2 * SIZE, struct.pack("<H", 5))  # used_event: not before idx 6
    first = q.pop()
    assert struct.unpack_from("<H", mem.ram, USED + 4 + 8 * SIZE)[0] == 1  # avail_event
    assert first is not None
    q.push(first, 4)
    assert q.should_notify()  # first notification always goes out
    second, third = q.pop(), q.pop()
    assert second is not None and third is not None
    q.push(second, 4)
    assert not q.should_notify()  # used idx 1 -> 2 does not pass used_event 5
    mem.write(AVAIL + 4 + 2 * SIZE, struct.pack("<H", 2))
    q.push(third, 4)
    assert q.should_notify()


def test_no_interrupt_flag_without_event_idx() -> None:
    mem = FakeMemory()
    desc(mem, 0, DATA, 4, F_WRITE)
    offer(mem, 0)
    mem.write(AVAIL, struct.pack("<H", 1))  # VRING_AVAIL_F_NO_INTERRUPT
    q = queue(mem)
    chain = q.pop()
    assert chain is not None
    q.push(chain, 0)
    assert not q.should_notify()


def test_gather_and_scatter_cross_buffer_boundaries() -> None:
    mem = FakeMemory()
    buffers = [Buffer(DATA, 3), Buffer(DATA + 100, 5)]
    assert scatter(mem, buffers, 2, b"abcdef") == 6
    assert mem.ram[DATA + 2 : DATA + 3] == b"a"
    assert mem.ram[DATA + 100 : DATA + 105] == b"bcdef"
    assert gather(mem, buffers, 1, 4) == b"\0abc"


def test_inflight_area_marks_pops_and_resubmits_after_a_restart() -> None:
    mem = FakeMemory()
    for i in range(3):
        desc(mem, i, DATA + 16 * i, 4, F_WRITE)
    offer(mem, 0, 1, 2)
    area = InflightArea.create(1, SIZE)
    try:
        inflight = area.queue(0)
        assert inflight is not None and inflight.resume(0) is None  # fresh: version set
        q = queue(mem, inflight=inflight)
        a, b, c = q.pop(), q.pop(), q.pop()
        assert a is not None and b is not None and c is not None
        q.push(b, 4)  # b done; a and c in flight when the back-end "dies"
        assert [inflight.desc(i)[0] for i in range(3)] == [1, 0, 1]

        again = InflightArea(os.dup(area.fd), area.size, 0, 1, SIZE)  # the new back-end
        try:
            resumed = again.queue(0)
            assert resumed is not None
            plan = resumed.resume(struct.unpack_from("<H", mem.ram, USED + 2)[0])
            assert plan is not None
            assert plan.resubmit == [0, 2]  # oldest first
            assert plan.last_avail_idx == 3  # used (1) + in flight (2)
            q2 = queue(mem, inflight=resumed, last_avail_idx=plan.last_avail_idx)
            q2.resubmit = list(plan.resubmit)
            heads = [q2.pop(), q2.pop(), q2.pop()]
            assert [h.head if h else None for h in heads] == [0, 2, None]
        finally:
            again.close()
    finally:
        area.close()
