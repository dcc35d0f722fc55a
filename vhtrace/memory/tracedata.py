"""Snapshots read back from a trace: their page maps, their pages, their memory.

A trace is streamed, so reading a snapshot takes two passes over the file:
the first collects snapshot and extent records (resolving each delta map
against the map it refers to) and so learns which page hashes are needed;
the second picks those pages up. Memory stays bounded by what was asked for:
the extents of the wanted snapshots and roles, the pages they name, and the
last map of each extent (to resolve deltas).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vhtrace.memory import pages
from vhtrace.memory.pages import PAGE_SIZE, ZERO_PAGE, PageMap
from vhtrace.memory.plan import MAX_EXTENT_PAGES
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EventRecord, ExtentRecord, PageRecord, SnapshotRecord

RING_ROLES = ("desc", "avail", "used", "indirect")


@dataclass(slots=True)
class SnapshotExtent:
    space: str
    addr: int
    pages: int
    role: str
    items: PageMap
    """Absolute page map."""

    @property
    def end(self) -> int:
        return self.addr + self.pages * PAGE_SIZE

    def role_kind(self) -> str:
        return self.role.partition(":")[0]


@dataclass(slots=True)
class Snapshot:
    record: SnapshotRecord
    extents: list[SnapshotExtent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What could not be read back (a delta without its base, a malformed map)."""

    @property
    def number(self) -> int:
        return self.record.snapshot

    @property
    def info(self) -> dict[str, Any]:
        return self.record.info

    def hashes(self) -> set[bytes]:
        return {digest for e in self.extents for _, digest in pages.iter_hashes(e.items)}


@dataclass
class SnapshotScan:
    snapshots: list[Snapshot]
    total: int
    """Snapshot records in the trace (wanted or not)."""
    problem: str | None
    """Why the trace ended early, if it did."""


def read_snapshots(
    reader: TraceReader,
    want: Callable[[int], bool] | None = None,
    keep: Callable[[str, str], bool] | None = None,
) -> SnapshotScan:
    """Pass 1: the snapshots ``want(number)`` selects, with the extents ``keep(space, role)``
    selects; every delta is resolved whatever is kept."""
    bases: dict[tuple[int, str, int, int], tuple[int, PageMap]] = {}
    pending: dict[int, tuple[list[SnapshotExtent], list[str]]] = {}
    found: list[Snapshot] = []
    total = 0
    for record in reader:
        if isinstance(record, ExtentRecord):
            _extent(record, bases, pending, want, keep)
        elif isinstance(record, SnapshotRecord):
            total += 1
            extents, problems = pending.pop(record.snapshot, ([], []))
            if want is None or want(record.snapshot):
                found.append(Snapshot(record, extents, problems))
        elif isinstance(record, EventRecord) and record.event in ("session-end", "session-failed"):
            for key in [k for k in bases if k[0] == record.session]:
                del bases[key]
    return SnapshotScan(found, total, reader.problem)


def _extent(
    record: ExtentRecord,
    bases: dict[tuple[int, str, int, int], tuple[int, PageMap]],
    pending: dict[int, tuple[list[SnapshotExtent], list[str]]],
    want: Callable[[int], bool] | None,
    keep: Callable[[str, str], bool] | None,
) -> None:
    key = (record.session, record.space, record.addr, record.pages)
    wanted = (want is None or want(record.snapshot)) and (
        keep is None or keep(record.space, record.role)
    )
    slot = pending.setdefault(record.snapshot, ([], [])) if wanted else None
    where = f"extent {record.space} 0x{record.addr:x} ({record.pages} pages)"
    problem = pages.check_map(record.items, delta=record.base != 0)
    if not 0 < record.pages <= MAX_EXTENT_PAGES or record.addr % PAGE_SIZE or record.addr < 0:
        problem = "not a page-aligned extent of 1 to 65536 pages"
    items: PageMap | None = None
    if problem is None:
        if record.base:
            base = bases.get(key)
            if base is None or base[0] != record.base:
                problem = f"its base, snapshot {record.base}, is not in the trace"
            else:
                try:
                    items = pages.apply_delta(base[1], record.items)
                except ValueError as exc:
                    problem = str(exc)
        else:
            items = list(record.items)
            if pages.map_pages(items) != record.pages:
                problem, items = "map and page count disagree", None
    if items is None:
        bases.pop(key, None)
        if slot is not None:
            slot[1].append(f"{where}: {problem}")
        return
    bases[key] = (record.snapshot, items)
    if slot is not None:
        slot[0].append(SnapshotExtent(record.space, record.addr, record.pages, record.role, items))


def read_pages(
    reader: TraceReader, wanted: set[bytes], sink: Callable[[bytes, bytes], None] | None = None
) -> dict[bytes, bytes]:
    """Pass 2: the pages whose hashes are wanted (to ``sink`` instead if given)."""
    found: dict[bytes, bytes] = {}
    for record in reader:
        if not isinstance(record, PageRecord) or record.hash not in wanted:
            continue
        if record.codec != fmt.PAGE_RAW or len(record.data) != PAGE_SIZE:
            continue  # a codec of a newer vhtrace, or damage: the page stays missing
        if sink is not None:
            sink(record.hash, record.data)
        else:
            found[record.hash] = record.data
    return found


def page_plan(
    extents: Iterable[SnapshotExtent], space: str = "gpa", start: int = 0, end: int | None = None
) -> dict[int, bytes | None]:
    """Page address -> hash (None: a zero page) of every captured page in [start, end).

    When extents overlap, the one written first wins (ring parts come before
    regions, buffers before nothing: all were read within the same snapshot)."""
    plan: dict[int, bytes | None] = {}
    for extent in extents:
        if extent.space != space:
            continue
        lo = max(start, extent.addr)
        hi = extent.end if end is None else min(end, extent.end)
        if lo >= hi:
            continue
        first = (lo - extent.addr) // PAGE_SIZE
        last = (hi - extent.addr + PAGE_SIZE - 1) // PAGE_SIZE
        hashes = {
            index: digest
            for index, digest in pages.iter_hashes(extent.items)
            if first <= index < last
        }
        for index in range(first, last):
            plan.setdefault(extent.addr + index * PAGE_SIZE, hashes.get(index))
    return plan


class SnapshotMemory:
    """A snapshot's memory of one space, readable by address (a MemoryReader)."""

    def __init__(
        self,
        extents: Iterable[SnapshotExtent],
        store: dict[bytes, bytes],
        space: str = "gpa",
        start: int = 0,
        end: int | None = None,
    ) -> None:
        self.plan = page_plan(extents, space, start, end)
        self.store = store

    def page(self, addr: int) -> bytes | None:
        """The page at a page-aligned address: its bytes, or None if not captured."""
        if addr not in self.plan:
            return None
        digest = self.plan[addr]
        if digest is None:
            return ZERO_PAGE
        return self.store.get(digest)

    def read(self, gpa: int, length: int) -> bytes | None:
        """Exactly ``length`` bytes, or None if any of them was not captured."""
        if length < 0 or length > 64 << 20 or gpa < 0:
            return None
        out = bytearray()
        for _, data in self.spans(gpa, length):
            if data is None:
                return None
            out += data
        return bytes(out)

    def spans(self, gpa: int, length: int) -> Iterator[tuple[int, bytes | None]]:
        """(address, bytes or None if not captured), one page piece at a time."""
        pos, end = gpa, gpa + length
        while pos < end:
            page_addr = pos - pos % PAGE_SIZE
            stop = min(end, page_addr + PAGE_SIZE)
            data = self.page(page_addr)
            yield pos, None if data is None else data[pos - page_addr : stop - page_addr]
            pos = stop
