"""Guest memory for tests: a bytearray at guest-physical address 0, and ring builders.

The builders lay rings out exactly as a virtio driver does (little-endian, split
or packed), so the decoders are tested against bytes, not against themselves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
F_AVAIL, F_USED = 1 << 7, 1 << 15
"""virtio 1.2's VIRTQ_DESC_F_* bits, written out (not taken from the code under test)."""

__all__ = ["F_AVAIL", "F_INDIRECT", "F_NEXT", "F_USED", "F_WRITE", "GuestRam", "SplitLayout"]


class GuestRam:
    """A MemoryReader over a bytearray."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.reads = 0

    def read(self, gpa: int, length: int) -> bytes | None:
        self.reads += 1
        if gpa < 0 or length < 0 or gpa + length > len(self.data):
            return None
        return bytes(self.data[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        self.data[gpa : gpa + len(data)] = data

    def desc(
        self, table: int, index: int, addr: int, length: int, flags: int = 0, nxt: int = 0
    ) -> None:
        """A split descriptor (or a packed one: then ``nxt`` is the buffer id)."""
        struct.pack_into("<QIHH", self.data, table + 16 * index, addr, length, flags, nxt)

    def packed_desc(
        self, table: int, index: int, addr: int, length: int, ident: int, flags: int
    ) -> None:
        struct.pack_into("<QIHH", self.data, table + 16 * index, addr, length, ident, flags)


@dataclass
class SplitLayout:
    """Where a split ring of ``num`` entries lives in a GuestRam."""

    ram: GuestRam
    num: int
    desc: int = 0x1000
    avail: int = 0x3000
    used: int = 0x4000

    def avail_ring(self, idx: int, heads: list[int], flags: int = 0, used_event: int = 0) -> None:
        """avail.idx = idx; heads written at positions idx-len(heads) .. idx-1."""
        struct.pack_into("<HH", self.ram.data, self.avail, flags, idx)
        for back, head in enumerate(reversed(heads), 1):
            slot = (idx - back) % self.num
            struct.pack_into("<H", self.ram.data, self.avail + 4 + 2 * slot, head)
        struct.pack_into("<H", self.ram.data, self.avail + 4 + 2 * self.num, used_event)

    def used_ring(
        self, idx: int, entries: list[tuple[int, int]], flags: int = 0, avail_event: int = 0
    ) -> None:
        struct.pack_into("<HH", self.ram.data, self.used, flags, idx)
        for back, (ident, length) in enumerate(reversed(entries), 1):
            slot = (idx - back) % self.num
            struct.pack_into("<II", self.ram.data, self.used + 4 + 8 * slot, ident, length)
        struct.pack_into("<H", self.ram.data, self.used + 4 + 8 * self.num, avail_event)
