"""Descriptor tables and chains as the driver wrote them, hostile ones included."""

from __future__ import annotations

from tests.memory.guest import F_INDIRECT, F_NEXT, F_WRITE, GuestRam
from vhtrace.memory.descriptors import (
    parse_packed_descs,
    parse_split_descs,
    read_indirect,
    walk_split_chain,
)

TABLE, INDIRECT = 0x1000, 0x2000
NUM = 8


def table(ram: GuestRam) -> list:
    return parse_split_descs(ram.read(TABLE, 16 * NUM) or b"", NUM)


def test_split_and_packed_layouts_read_their_fields() -> None:
    ram = GuestRam(0x4000)
    ram.desc(TABLE, 0, 0x8000, 512, F_NEXT | F_WRITE, 3)
    [desc] = parse_split_descs(ram.read(TABLE, 16) or b"", 1)
    assert (desc.slot, desc.addr, desc.len, desc.next) == (0, 0x8000, 512, 3)
    assert desc.write and desc.has_next and not desc.indirect
    ram.packed_desc(TABLE, 1, 0x9000, 64, 7, F_WRITE)
    packed = parse_packed_descs(ram.read(TABLE, 32) or b"", 2)[1]
    assert (packed.addr, packed.len, packed.next, packed.flags) == (0x9000, 64, 7, F_WRITE)


def test_a_short_table_gives_only_the_whole_descriptors() -> None:
    assert len(parse_split_descs(bytes(40), 8)) == 2


def test_a_chain_is_followed_readable_then_writable() -> None:
    ram = GuestRam(0x4000)
    ram.desc(TABLE, 2, 0x8000, 16, F_NEXT, 5)
    ram.desc(TABLE, 5, 0x9000, 4096, F_NEXT | F_WRITE, 6)
    ram.desc(TABLE, 6, 0xA000, 1, F_WRITE)
    chain = walk_split_chain(table(ram), 2, ram, NUM)
    assert [d.slot for d in chain.buffers] == [2, 5, 6]
    assert (chain.out_bytes, chain.in_bytes, chain.problems) == (16, 4097, [])


def test_loops_and_bad_heads_and_order_are_problems_not_hangs() -> None:
    ram = GuestRam(0x4000)
    ram.desc(TABLE, 0, 0x8000, 16, F_NEXT, 1)
    ram.desc(TABLE, 1, 0x8000, 16, F_NEXT, 0)
    assert walk_split_chain(table(ram), 0, ram, NUM).problems == ["desc 0: loop in the chain"]
    assert walk_split_chain(table(ram), 9, ram, NUM).problems == [
        "head 9 out of range (queue size 8)"
    ]
    ram.desc(TABLE, 3, 0x8000, 16, F_NEXT | F_WRITE, 4)
    ram.desc(TABLE, 4, 0x8000, 16, 0)
    assert walk_split_chain(table(ram), 3, ram, NUM).problems == [
        "desc 4: device-readable after a device-writable one"
    ]


def test_an_indirect_table_is_expanded_into_the_chain() -> None:
    ram = GuestRam(0x4000)
    ram.desc(TABLE, 0, INDIRECT, 3 * 16, F_INDIRECT)
    ram.desc(INDIRECT, 0, 0x8000, 16, F_NEXT, 1)
    ram.desc(INDIRECT, 1, 0x9000, 512, F_NEXT | F_WRITE, 2)
    ram.desc(INDIRECT, 2, 0xA000, 1, F_WRITE)
    chain = walk_split_chain(table(ram), 0, ram, NUM)
    assert chain.indirect is not None and chain.indirect.addr == INDIRECT
    assert [(d.addr, d.len) for d in chain.buffers] == [(0x8000, 16), (0x9000, 512), (0xA000, 1)]
    assert chain.problems == []
    refused = walk_split_chain(table(ram), 0, ram, NUM, indirect_ok=False)
    assert refused.problems == ["desc 0: INDIRECT but VIRTIO_F_INDIRECT_DESC not negotiated"]


def test_indirect_tables_that_cannot_be_read_say_why() -> None:
    ram = GuestRam(0x4000)
    for slot, (addr, length) in enumerate(
        [(INDIRECT, 20), (INDIRECT, 0), (0x100000, 32), (INDIRECT, 16 * 20)]
    ):
        ram.desc(TABLE, slot, addr, length, F_INDIRECT)
    descs = table(ram)
    problems: list[str] = []
    read_indirect(ram, descs[0], NUM, False, problems)
    assert problems[0].endswith("length not a multiple of 16")
    for desc, ending in ((descs[1], "empty"), (descs[2], "not in guest memory"),
                         (descs[3], "20 entries, more than the queue size 8")):  # fmt: skip
        problems = []
        read_indirect(ram, desc, NUM, False, problems)
        assert problems[0].endswith(ending), problems
    assert len(read_indirect(ram, descs[3], NUM, False, [])) == NUM
