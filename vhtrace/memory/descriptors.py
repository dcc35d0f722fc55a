"""Virtqueue descriptors and descriptor chains, decoded from bytes (pure).

Shared by the split and the packed ring decoders. Guest memory is reached only
through a :class:`MemoryReader` (the recorder's live fds, or the pages of a
snapshot read back from a trace), so the decoders never do I/O themselves.

Everything here is bounded: a chain is followed for at most the queue size
descriptors (the spec's limit on a chain, indirect tables included), an
indirect table is read for at most that many entries, and whatever is wrong
(an index out of range, a loop, an indirect table inside an indirect table,
a table that is not in memory) becomes a *problem* string in the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from vhtrace.protocol import virtio
from vhtrace.protocol.virtio import DESC, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE


class MemoryReader(Protocol):
    """Guest-physical memory: ``read`` returns exactly ``length`` bytes, or None."""

    def read(self, gpa: int, length: int) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Desc:
    """One descriptor: split ``{addr, len, flags, next}`` or packed ``{addr, len, id, flags}``."""

    slot: int
    """Its index in the table it was read from."""
    addr: int
    len: int
    flags: int
    next: int
    """Split: the next descriptor's index. Packed: the buffer id."""

    @property
    def write(self) -> bool:
        return bool(self.flags & DESC_F_WRITE)

    @property
    def indirect(self) -> bool:
        return bool(self.flags & DESC_F_INDIRECT)

    @property
    def has_next(self) -> bool:
        return bool(self.flags & DESC_F_NEXT)

    def flag_text(self) -> str:
        return virtio.desc_flag_text(self.flags)


@dataclass(slots=True)
class Chain:
    """A request as the driver wrote it: the buffers of one descriptor chain."""

    head: int
    buffers: list[Desc] = field(default_factory=list)
    """The descriptors that point at data, in chain order (an indirect table's expanded)."""
    indirect: Desc | None = None
    """The descriptor that points at an indirect table, if the chain has one."""
    problems: list[str] = field(default_factory=list)

    @property
    def out_bytes(self) -> int:
        """Bytes the device reads (driver -> device)."""
        return sum(d.len for d in self.buffers if not d.write)

    @property
    def in_bytes(self) -> int:
        """Bytes the device writes (device -> driver)."""
        return sum(d.len for d in self.buffers if d.write)


def parse_split_descs(data: bytes, count: int) -> list[Desc]:
    """``count`` split descriptors (le64 addr, le32 len, le16 flags, le16 next) from ``data``."""
    count = min(count, len(data) // DESC_SIZE)
    return [Desc(i, *DESC.unpack_from(data, i * DESC_SIZE)) for i in range(count)]


def parse_packed_descs(data: bytes, count: int) -> list[Desc]:
    """``count`` packed descriptors (le64 addr, le32 len, le16 id, le16 flags) from ``data``."""
    count = min(count, len(data) // DESC_SIZE)
    out = []
    for i in range(count):
        addr, length, ident, flags = DESC.unpack_from(data, i * DESC_SIZE)
        out.append(Desc(i, addr, length, flags, ident))
    return out


def read_indirect(
    memory: MemoryReader, desc: Desc, limit: int, packed: bool, problems: list[str]
) -> list[Desc]:
    """The descriptors of the indirect table ``desc`` points at (at most ``limit``)."""
    where = f"desc {desc.slot}: indirect table at 0x{desc.addr:x} ({desc.len} bytes)"
    if desc.len % DESC_SIZE:
        problems.append(f"{where}: length not a multiple of {DESC_SIZE}")
    count = desc.len // DESC_SIZE
    if count == 0:
        problems.append(f"{where}: empty")
        return []
    if count > limit:
        problems.append(f"{where}: {count} entries, more than the queue size {limit}")
        count = limit
    data = memory.read(desc.addr, count * DESC_SIZE)
    if data is None:
        problems.append(f"{where}: not in guest memory")
        return []
    return parse_packed_descs(data, count) if packed else parse_split_descs(data, count)


def walk_split_chain(
    table: list[Desc], head: int, memory: MemoryReader, num: int, indirect_ok: bool = True
) -> Chain:
    """Follow a split-ring chain from ``head``: at most ``num`` descriptors, never twice one."""
    chain = Chain(head)
    problems = chain.problems
    if head >= len(table):
        problems.append(f"head {head} out of range (queue size {num})")
        return chain
    seen: set[int] = set()
    index = head
    steps = 0
    while True:
        if index in seen:
            problems.append(f"desc {index}: loop in the chain")
            break
        seen.add(index)
        desc = table[index]
        steps += 1
        if desc.indirect:
            if not indirect_ok:
                problems.append(f"desc {index}: INDIRECT but VIRTIO_F_INDIRECT_DESC not negotiated")
            if desc.has_next:
                problems.append(f"desc {index}: both INDIRECT and NEXT set")
            if chain.indirect is not None:
                problems.append(f"desc {index}: a second indirect table in one chain")
            else:
                chain.indirect = desc
                _walk_indirect(chain, desc, memory, num)
            break
        chain.buffers.append(desc)
        if not desc.has_next:
            break
        if steps >= num:
            problems.append(f"chain longer than the queue size {num}")
            break
        if desc.next >= len(table):
            problems.append(f"desc {index}: next {desc.next} out of range (queue size {num})")
            break
        index = desc.next
    _check_order(chain)
    return chain


def _walk_indirect(chain: Chain, desc: Desc, memory: MemoryReader, num: int) -> None:
    table = read_indirect(memory, desc, num, False, chain.problems)
    if not table:
        return
    seen: set[int] = set()
    index = 0
    while True:
        if index in seen:
            chain.problems.append(f"indirect desc {index}: loop in the indirect table")
            return
        seen.add(index)
        entry = table[index]
        if entry.indirect:
            chain.problems.append(f"indirect desc {index}: INDIRECT inside an indirect table")
            return
        chain.buffers.append(entry)
        if not entry.has_next:
            return
        if entry.next >= len(table):
            chain.problems.append(
                f"indirect desc {index}: next {entry.next} out of range ({len(table)} entries)"
            )
            return
        index = entry.next


def _check_order(chain: Chain) -> None:
    """The spec puts every device-writable buffer after the device-readable ones."""
    writable = False
    for desc in chain.buffers:
        if desc.write:
            writable = True
        elif writable:
            chain.problems.append(f"desc {desc.slot}: device-readable after a device-writable one")
            return
