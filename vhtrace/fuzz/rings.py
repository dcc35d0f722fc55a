"""Ring mutations: descriptor chains written into the guest memory we hand out, then kicked.

Control-plane messages say where the rings are; what a back-end then reads from them is
guest memory, which the fuzzer owns (the memfds it passed). A :class:`RingAttack` puts a
malformed chain on one ring of one recorded setup (SET_VRING_NUM/ADDR/KICK/ENABLE):
descriptors that loop, ``next`` past the queue size, indirect tables anywhere (outside
memory, at the end of a region, looping), lengths past the region, a head index past
the queue size, an avail index that jumps by more than the ring holds. The driver writes
it once the ring is enabled and signals the ring's kick eventfd, so the back-end walks
it. This module only builds attacks (pure); ``driver.RingFds`` applies them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from vhtrace.protocol.virtio import DESC, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE

F_NEXT, F_WRITE, F_INDIRECT = DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT


@dataclass(frozen=True)
class RingSetup:
    """One ring as a recorded setup set it up."""

    index: int
    num: int
    desc_uaddr: int
    avail_uaddr: int
    kick_seq: int
    """The recorded SET_VRING_KICK whose eventfd kicks this ring."""
    enable_seq: int
    """The recorded message after which the ring runs (SET_VRING_ENABLE 1, else the kick)."""


@dataclass(frozen=True)
class RingAttack:
    setup: RingSetup
    writes: tuple[tuple[int, bytes], ...]
    """(guest-physical address, bytes) to write: descriptors, indirect tables."""
    desc_writes: tuple[tuple[int, bytes], ...]
    """(slot in the ring's descriptor table, 16 bytes)."""
    head: int
    """The descriptor index put in the avail ring."""
    bump: int = 1
    """How far the avail index moves (more than the ring holds: a bogus index)."""
    what: str = ""


def desc(addr: int, length: int, flags: int, nxt: int) -> bytes:
    return DESC.pack(addr & (1 << 64) - 1, length & 0xFFFFFFFF, flags, nxt & 0xFFFF)


def craft(rng: random.Random, setup: RingSetup, regions: list[tuple[int, int]]) -> RingAttack:
    """A malformed chain for ``setup``; ``regions`` are the (gpa, size) of guest memory."""
    num = max(1, setup.num)
    head = rng.randrange(num)
    other = (head + 1) % num
    gpa, size = rng.choice(regions) if regions else (0, 0x1000)
    inside = gpa + min(size // 2, 0x100000) & ~0xF
    end = gpa + size
    top = max((g + s for g, s in regions), default=0x1000)
    kind = rng.randrange(9)
    writes: list[tuple[int, bytes]] = []
    descs: list[tuple[int, bytes]] = []
    bump = 1
    if kind == 0:
        descs.append((head, desc(inside, 16, F_NEXT, head)))
        what = f"descriptor {head} chained to itself"
    elif kind == 1:
        descs += [(head, desc(inside, 16, F_NEXT, other)), (other, desc(inside, 512,
                  F_NEXT | F_WRITE, head))]  # fmt: skip
        what = f"descriptors {head} and {other} chained in a loop"
    elif kind == 2:
        nxt = rng.choice([num, num + 1, 0xFFFF])
        descs.append((head, desc(inside, 16, F_NEXT, nxt)))
        what = f"descriptor {head} chained to {nxt}, past the queue size {num}"
    elif kind == 3:
        where = rng.choice([top + 0x1000, 0, end - 8, (1 << 64) - 16, inside + 1])
        length = rng.choice([16, DESC_SIZE * (num + 1), 0, 0xFFFFFFFF, 17])
        descs.append((head, desc(where, length, F_INDIRECT, 0)))
        what = f"descriptor {head}: indirect table at 0x{where:x}, {length} bytes"
    elif kind == 4:
        table = inside
        writes.append((table, desc(inside + 64, 16, F_NEXT, 1) + desc(inside + 64, 16, F_NEXT, 0)))
        descs.append((head, desc(table, 2 * DESC_SIZE, F_INDIRECT, 0)))
        what = f"descriptor {head}: indirect table whose two entries loop"
    elif kind == 5:
        table = inside
        writes.append((table, desc(inside, 32, F_INDIRECT, 0)))
        descs.append((head, desc(table, DESC_SIZE, F_INDIRECT, 0)))
        what = f"descriptor {head}: an indirect table inside an indirect table"
    elif kind == 6:
        length = rng.choice([0x100000, 0xFFFFFFFF, size + 1])
        start = end - rng.choice([16, 1, 0])
        descs.append((head, desc(start, length, rng.choice([0, F_WRITE]), 0)))
        what = f"descriptor {head}: 0x{length:x} bytes at 0x{start:x}, past the region's end"
    elif kind == 7:
        head = rng.choice([num, num + 5, 0xFFFF])
        what = f"avail ring names descriptor {head}, past the queue size {num}"
    else:
        bump = rng.choice([num + 1, 0x8000, 0xFFFF])
        descs.append((head, desc(inside, 16, 0, 0)))
        what = f"avail index moved by {bump} (the ring holds {num})"
    return RingAttack(setup, tuple(writes), tuple(descs), head, bump,
                      f"ring {setup.index}: {what}")  # fmt: skip
