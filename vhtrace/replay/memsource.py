"""Where the contents of a replayed memory fd come from: the hook for memory snapshots.

A recorded memfd (guest RAM, an inflight area) is re-created with its recorded size.
What goes in it is a :class:`MemorySource`'s answer: the bytes the trace's memory
snapshots hold for that fd, or None for zero-filled memory. :class:`SnapshotSource`
answers from the first snapshot taken after the message that passed the fd (with
``--memory rings`` that is the rings and buffers at ring start; with ``full`` the
whole region); traces without snapshots give :class:`NoSnapshots`. A fuzz reproducer
says instead what each memfd held when it was passed: ``memory-fill`` events
``{message: N, fd: I, offset, data}`` (:class:`FillSource`), so that a replay hands the
back-end the same memory the fuzzer did, whatever the mutated region table says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from vhtrace.memory.pages import PAGE_SIZE
from vhtrace.memory.tracedata import Snapshot, page_plan, read_pages, read_snapshots
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EventRecord

MEMORY_FILL = "memory-fill"


class MemorySource(Protocol):
    """Contents of a recorded memory fd at a message, or None (zero-filled)."""

    def contents(
        self, seq: int, index: int, meta: dict[str, Any], fields: dict[str, Any] | None
    ) -> Iterable[tuple[int, bytes]] | None:
        """(file offset, bytes) pieces to write into fd number ``index`` of message ``seq``
        before it is passed on. ``meta`` is the fd's recorded metadata, ``fields`` the
        message's decoded payload (a region's ``guest_phys_addr`` and ``mmap_offset`` map
        guest-physical snapshot pages to file offsets)."""
        ...


class NoSnapshots:
    """No memory recorded: every replayed memory fd starts zero-filled."""

    def contents(
        self, seq: int, index: int, meta: dict[str, Any], fields: dict[str, Any] | None
    ) -> Iterable[tuple[int, bytes]] | None:
        return None


class SnapshotSource:
    """Guest memory regions filled from the trace's snapshots (guest-physical pages)."""

    def __init__(self, snapshots: list[Snapshot], store: dict[bytes, bytes]) -> None:
        self.snapshots = sorted(snapshots, key=lambda s: s.record.seq)
        self.store = store

    @classmethod
    def of_trace(cls, path: str | os.PathLike[str]) -> MemorySource:
        """A source for ``path``: its memory-fill events if it has any, else its
        snapshots, else NoSnapshots.

        Two passes over the trace (snapshot maps, then the pages they name); the pages
        are held in memory, so a ``--memory full`` trace costs what it captured."""
        with TraceReader(path) as reader:
            scan = read_snapshots(reader, keep=lambda space, role: space == "gpa")
        fills = read_fills(path)
        if fills:
            return FillSource(fills)
        if not scan.snapshots:
            return NoSnapshots()
        wanted = set().union(*(s.hashes() for s in scan.snapshots))
        with TraceReader(path) as reader:
            store = read_pages(reader, wanted)
        return cls(scan.snapshots, store)

    def contents(
        self, seq: int, index: int, meta: dict[str, Any], fields: dict[str, Any] | None
    ) -> Iterable[tuple[int, bytes]] | None:
        region = _region(fields, index)
        snapshot = next((s for s in self.snapshots if s.record.seq >= seq), None)
        if region is None or snapshot is None:
            return None
        return self._pieces(snapshot, region)

    def _pieces(self, snapshot: Snapshot, region: dict[str, Any]) -> Iterator[tuple[int, bytes]]:
        gpa, size = region["guest_phys_addr"], region["memory_size"]
        plan = page_plan(snapshot.extents, "gpa", gpa, gpa + size)
        for addr, digest in sorted(plan.items()):
            if digest is None:
                continue  # a zero page: a new memfd is zero already
            data = self.store.get(digest)
            if data is None:
                continue  # named but not in the trace (damaged): stays zero
            start = max(addr, gpa)
            piece = data[start - addr : min(PAGE_SIZE, gpa + size - addr)]
            yield region["mmap_offset"] + (start - gpa), piece


def _region(fields: dict[str, Any] | None, index: int) -> dict[str, Any] | None:
    """The memory region fd ``index`` of a SET_MEM_TABLE or ADD_MEM_REG maps."""
    if not fields:
        return None
    if "regions" in fields:
        regions = fields["regions"]
        return regions[index] if index < len(regions) else None
    if "guest_phys_addr" in fields and "mmap_offset" in fields and index == 0:
        return fields
    return None


class FillSource:
    """What each memfd held when it was passed, as a fuzz reproducer says it: (message,
    fd index) -> (file offset, bytes) pieces."""

    def __init__(self, fills: dict[tuple[int, int], list[tuple[int, bytes]]]) -> None:
        self.fills = fills

    def contents(
        self, seq: int, index: int, meta: dict[str, Any], fields: dict[str, Any] | None
    ) -> Iterable[tuple[int, bytes]] | None:
        size = int(meta.get("size") or 0)
        # a trace's offsets are not trusted: nothing goes past the memfd's recorded size
        return [
            (offset, data[: size - offset])
            for offset, data in self.fills.get((seq, index), ())
            if offset < size
        ]


def fill_event(message: int, fd: int, offset: int, data: bytes) -> tuple[str, dict[str, Any]]:
    """The trace event saying that fd ``fd`` of message ``message`` held ``data`` at
    ``offset`` when it was passed."""
    return MEMORY_FILL, {"message": message, "fd": fd, "offset": offset, "data": data}


def read_fills(path: str | os.PathLike[str]) -> dict[tuple[int, int], list[tuple[int, bytes]]]:
    """The memory-fill events of a trace (malformed ones are skipped)."""
    fills: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
    with TraceReader(path) as reader:
        for record in reader:
            if not isinstance(record, EventRecord) or record.event != MEMORY_FILL:
                continue
            info = record.info or {}
            message, fd, offset, data = (info.get(k) for k in ("message", "fd", "offset", "data"))
            if all(isinstance(v, int) and v >= 0 for v in (message, fd, offset)) and isinstance(
                data, bytes
            ):
                fills.setdefault((message, fd), []).append((offset, data))
    return fills
