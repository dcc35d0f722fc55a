"""What a snapshot captures, and the rings it decodes on the way (pure).

Given the rings the conversation configured and a :class:`MemoryReader`, this
module decodes each ring (the recorder does it on live memory to find the
buffers; ``vhtrace rings`` does it again on the captured pages) and turns what
it found into *extents*: page-aligned ranges of memory with a role.

In ``rings`` mode a snapshot holds the descriptor tables, avail and used rings,
indirect tables and the buffers descriptors point to: first the chains the
device has not used yet, then the most recent completions, then every other
descriptor of the table, until the buffer budget is spent. In ``full`` mode it
holds every region (plus the ring parts again, as extents of their own, so the
ring decoder finds them without reading gigabytes back).

Work is bounded twice: each chain by the queue size, and all the chains of a
ring together by a step budget (a table of 32768 descriptors chained end to end
must not cost 32768² steps).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vhtrace.memory.descriptors import Chain, Desc, MemoryReader, read_indirect
from vhtrace.memory.packed import PackedBase, PackedRing, decode_packed, slots_between, walk_packed
from vhtrace.memory.pages import PAGE_SIZE, pages_spanning
from vhtrace.memory.split import SplitRing, decode_split
from vhtrace.memory.translate import RegionLike, to_gpa
from vhtrace.protocol import virtio

MAX_EXTENT_PAGES = 1 << 16
"""Pages per extent record at most (256 MiB): keeps every record far below the reader's cap."""
DEFAULT_BUFFER_LIMIT = 64 << 20
"""Buffer bytes a rings-mode snapshot captures at most (descriptor lengths are the guest's)."""
STEP_FACTOR = 4
"""Descriptors visited per ring at most: STEP_FACTOR x the queue size, all chains together."""


@dataclass(frozen=True, slots=True)
class Extent:
    space: str
    """``gpa``, ``inflight`` or ``log``."""
    addr: int
    pages: int
    role: str

    @property
    def size(self) -> int:
        return self.pages * PAGE_SIZE


# -- ring configuration ------------------------------------------------------------------


def ring_config(
    ring: Any,
    space: str,
    regions: Sequence[RegionLike],
    *,
    packed: bool,
    event_idx: bool,
    indirect: bool,
) -> dict[str, Any] | None:
    """What a snapshot records about one ring (None if the ring has no addresses yet).

    ``ring`` is a vhtrace.protocol.state.Ring (anything with its attributes)."""
    if ring.num is None or ring.desc is None or ring.avail is None or ring.used is None:
        return None
    num = ring.num
    sizes = virtio.ring_sizes(num, packed, event_idx)
    config: dict[str, Any] = {
        "index": ring.index,
        "num": num,
        "layout": "packed" if packed else "split",
        "event_idx": event_idx,
        "indirect": indirect,
        "space": space,
        "desc": ring.desc,
        "avail": ring.avail,
        "used": ring.used,
        "base": ring.base,
        "last_base": ring.last_base,
        "enabled": ring.enabled,
        "started": ring.started,
    }
    problems = []
    for name, addr, size in zip(
        ("desc", "avail", "used"), (ring.desc, ring.avail, ring.used), sizes, strict=True
    ):
        translation = to_gpa(addr, size, space, regions)
        config[f"{name}_gpa"] = translation.gpa
        if translation.problem:
            problems.append(f"{name}: {translation.problem}")
    if problems:
        config["problems"] = problems
    return config


def config_problem(config: object) -> str | None:
    """Why a ring configuration read from a trace cannot be decoded, or None."""
    if not isinstance(config, dict):
        return "not a map"
    for key in ("index", "num"):
        if type(config.get(key)) is not int:
            return f"no {key}"
    for key in ("desc", "avail", "used", "desc_gpa", "avail_gpa", "used_gpa", "base", "last_base"):
        value = config.get(key)
        if value is not None and type(value) is not int:
            return f"{key} is not a number"
    return None


# -- decoding ------------------------------------------------------------------------------


@dataclass(slots=True)
class RingView:
    """One ring as found in memory: the decoded structure, chains, problems."""

    config: dict[str, Any]
    split: SplitRing | None = None
    packed: PackedRing | None = None
    chains: dict[int, Chain] = field(default_factory=dict)
    """Split: by head. Packed: by the slot the chain starts at."""
    problems: list[str] = field(default_factory=list)
    steps: int = 0
    exhausted: bool = False

    @property
    def index(self) -> int:
        return int(self.config["index"])

    @property
    def budget(self) -> int:
        return STEP_FACTOR * max(1, int(self.config["num"]))

    def split_chain(self, head: int, memory: MemoryReader) -> Chain | None:
        """The chain at ``head`` (cached); None once the step budget is spent."""
        if self.split is None:
            return None
        chain = self.chains.get(head)
        if chain is not None:
            return chain
        if self.steps >= self.budget:
            if not self.exhausted:
                self.exhausted = True
                self.problems.append(f"stopped after {self.steps} descriptors (step budget)")
            return None
        chain = self.split.chain(head, memory, bool(self.config.get("indirect", True)))
        self.steps += len(chain.buffers) + 1
        self.chains[head] = chain
        return chain

    def packed_base(self, which: str = "auto") -> PackedBase | None:
        """The device's position: the last GET_VRING_BASE, else the SET_VRING_BASE."""
        value = self.config.get("last_base")
        if which == "set" or value is None:
            value = self.config.get("base")
        return PackedBase.from_num(value) if value is not None else None


def decode_ring(config: dict[str, Any], memory: MemoryReader) -> RingView:
    """Decode one ring of a snapshot's ring configuration."""
    view = RingView(config, problems=list(config.get("problems", ())))
    desc, avail, used = config.get("desc_gpa"), config.get("avail_gpa"), config.get("used_gpa")
    if desc is None or avail is None or used is None:
        return view
    num = int(config["num"])
    if config.get("layout") == "packed":
        view.packed = decode_packed(memory, num, desc, avail, used)
        view.problems += view.packed.problems
    else:
        view.split = decode_split(memory, num, desc, avail, used, bool(config.get("event_idx")))
        view.problems += view.split.problems
    return view


def packed_chains(view: RingView, memory: MemoryReader) -> tuple[list[Chain], list[Chain]]:
    """(in flight at the device, available after it) for a packed ring with a known base."""
    ring, base = view.packed, view.packed_base()
    if ring is None or base is None or not ring.descs:
        return [], []
    taken = slots_between(base.used_idx, base.used_wrap, base.avail_idx, base.avail_wrap, ring.num)
    in_flight, problems = walk_packed(
        ring, memory, base.used_idx, base.used_wrap, taken, available_only=False
    )
    view.problems += problems
    pending, problems = walk_packed(ring, memory, base.avail_idx, base.avail_wrap)
    view.problems += problems
    return in_flight, pending


# -- what to capture ---------------------------------------------------------------------


def ring_parts(view: RingView) -> list[tuple[str, int, int]]:
    """(role, gpa, length) of the ring's own structures."""
    config = view.config
    num, index = int(config["num"]), config["index"]
    event_idx = bool(config.get("event_idx"))
    packed = config.get("layout") == "packed"
    parts = []
    sizes = virtio.ring_sizes(num, packed, event_idx)
    for name, size in zip(("desc", "avail", "used"), sizes, strict=True):
        gpa = config.get(f"{name}_gpa")
        if gpa is not None and num > 0:
            parts.append((f"{name}:{index}", gpa, size))
    return parts


def ring_buffers(view: RingView, memory: MemoryReader) -> list[tuple[str, int, int]]:
    """(role, gpa, length) of indirect tables and buffers, most interesting first."""
    index = view.index
    out: list[tuple[str, int, int]] = []
    chains: list[Chain] = []
    if view.split is not None and view.split.table:
        ring = view.split
        heads = [head for _, head in ring.pending()]
        heads += [ident for _, ident, _ in ring.recent_used(ring.num)]
        if ring.avail_idx is not None and ring.avail_ring:
            heads += [
                head for _, head in ring.avail_entries(ring.avail_idx - ring.num, ring.avail_idx)
            ][::-1]
        walked: set[int] = set()
        for head in heads:
            if head < ring.num and head not in walked:
                walked.add(head)
                chain = view.split_chain(head, memory)
                if chain is None:
                    break
                chains.append(chain)
        covered = {d.slot for c in chains for d in c.buffers if c.indirect is None}
        covered |= {c.indirect.slot for c in chains if c.indirect is not None}
        loose = [d for d in ring.table if d.slot not in covered]
        out += _loose(view, loose, memory, packed=False)
    elif view.packed is not None and view.packed.descs:
        in_flight, pending = packed_chains(view, memory)
        chains = in_flight + pending
        covered = {id(d) for c in chains for d in c.buffers}
        out += _loose(
            view, [d for d in view.packed.descs if id(d) not in covered], memory, packed=True
        )
    first: list[tuple[str, int, int]] = []
    for chain in chains:
        if chain.indirect is not None:
            first.append((f"indirect:{index}", chain.indirect.addr, chain.indirect.len))
        first += [(f"buffer:{index}", d.addr, d.len) for d in chain.buffers]
    return first + out


def _loose(
    view: RingView, descs: Iterable[Desc], memory: MemoryReader, packed: bool
) -> list[tuple[str, int, int]]:
    """Descriptors that no walked chain reached: their buffers and indirect tables."""
    index, num = view.index, max(1, int(view.config["num"]))
    out = []
    for desc in descs:
        if desc.len == 0:
            continue
        if desc.indirect:
            out.append((f"indirect:{index}", desc.addr, desc.len))
            if view.steps >= view.budget:
                continue
            entries = read_indirect(memory, desc, num, packed, [])
            view.steps += len(entries) + 1
            out += [(f"buffer:{index}", e.addr, e.len) for e in entries if e.len]
        else:
            out.append((f"buffer:{index}", desc.addr, desc.len))
    return out


def merge_extents(
    ranges: Iterable[tuple[str, int, int]], limit: int | None = None, space: str = "gpa"
) -> tuple[list[Extent], int]:
    """Page-aligned extents covering ``ranges`` in order, within ``limit`` bytes of pages.

    Overlapping and adjacent ranges of the same role merge; a range that no longer
    fits the budget is cut (the bytes left out are returned)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    used_bytes = 0
    left_out = 0
    seen: set[tuple[str, int, int]] = set()
    for role, addr, length in ranges:
        if length <= 0 or addr < 0 or addr + length > 1 << 64:
            continue
        first, count = pages_spanning(addr, length)
        if (role, first, count) in seen:
            continue
        seen.add((role, first, count))
        if limit is not None:
            room = (limit - used_bytes) // PAGE_SIZE
            if room <= 0:
                left_out += length
                continue
            if count > room:
                left_out += (count - room) * PAGE_SIZE
                count = room
        used_bytes += count * PAGE_SIZE
        spans.setdefault(role, []).append((first, first + count * PAGE_SIZE))
    extents: list[Extent] = []
    for role, items in spans.items():
        items.sort()
        start, end = items[0]
        for lo, hi in items[1:]:
            if lo <= end:
                end = max(end, hi)
            else:
                extents += _split(space, start, end, role)
                start, end = lo, hi
        extents += _split(space, start, end, role)
    return extents, left_out


def _split(space: str, start: int, end: int, role: str) -> list[Extent]:
    pages = (end - start) // PAGE_SIZE
    return [
        Extent(space, start + first * PAGE_SIZE, min(MAX_EXTENT_PAGES, pages - first), role)
        for first in range(0, pages, MAX_EXTENT_PAGES)
    ]


def region_extents(regions: Iterable[tuple[int, int]]) -> list[Extent]:
    """Whole regions (gpa, readable bytes) as extents of at most MAX_EXTENT_PAGES pages."""
    out: list[Extent] = []
    for gpa, size in regions:
        first, count = pages_spanning(gpa, size)
        out += _split("gpa", first, first + count * PAGE_SIZE, "region")
    return out
