"""Taking a snapshot: read extents, store new pages, write the maps and the snapshot record.

Runs on the recorder thread, never on the relay's. Memory use is bounded by one
read chunk (1 MiB), the trace writer's frame buffer, the page index and the
page maps kept as delta bases (16 bytes per non-zero page of the last snapshot
of each extent).

Records, in this order: the new pages (``p``), one page map per extent (``x``),
then the snapshot record (``i``) that commits them. A page map is written as a
delta against the same extent in the session's previous snapshot when there
is one, so memory that did not change costs a few bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vhtrace.memory import pages
from vhtrace.memory.access import Chunk, SessionMemory
from vhtrace.memory.inflight import decode_inflight
from vhtrace.memory.pages import PAGE_SIZE, MapBuilder, PageMap, PageSink
from vhtrace.memory.plan import (
    DEFAULT_BUFFER_LIMIT,
    Extent,
    RingView,
    decode_ring,
    merge_extents,
    region_extents,
    ring_buffers,
    ring_config,
    ring_parts,
)
from vhtrace.memory.store import PageIndex
from vhtrace.protocol import spec
from vhtrace.protocol.state import ConversationState
from vhtrace.trace.writer import TraceWriter

MODES = ("rings", "full", "none")
MAX_PROBLEMS = 32
"""Problems kept per snapshot record (a hostile ring can produce thousands)."""


@dataclass
class SnapshotOptions:
    mode: str = "rings"
    buffer_limit: int = DEFAULT_BUFFER_LIMIT


@dataclass
class CaptureStats:
    extents: int = 0
    pages: int = 0
    zero_pages: int = 0
    new_pages: int = 0
    new_bytes: int = 0
    read_bytes: int = 0
    missing_bytes: int = 0
    """Bytes of extents that turned out unreadable (an fd shorter than its region)."""
    left_out_bytes: int = 0
    """Buffer bytes beyond the buffer budget."""
    outside_bytes: int = 0
    """Buffer bytes descriptors point at outside every region (not captured)."""

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class SnapshotResult:
    snapshot: int
    problems: list[tuple[str, str]] = field(default_factory=list)
    """(code, text): what decoding found wrong (rings, the inflight area)."""
    stats: CaptureStats = field(default_factory=CaptureStats)
    seconds: float = 0.0


class _Sink(PageSink):
    """Writes a page the first time its hash is seen."""

    def __init__(self, writer: TraceWriter, index: PageIndex, stats: CaptureStats) -> None:
        self.writer, self.index, self.stats = writer, index, stats

    def offer(self, digest: bytes, page: bytes) -> None:
        if not self.index.remember(digest):
            self.writer.page(digest, page)
            self.stats.new_pages += 1
            self.stats.new_bytes += len(page)


class Snapshotter:
    """Takes the snapshots of a recording: numbering, page index, delta bases."""

    def __init__(
        self, writer: TraceWriter, options: SnapshotOptions, index: PageIndex | None = None
    ) -> None:
        self.writer = writer
        self.options = options
        self.index = index if index is not None else PageIndex()
        self.count = 0
        self._bases: dict[tuple[int, str, int, int], tuple[int, PageMap]] = {}

    def forget(self, session: int) -> None:
        """The session ended: its delta bases go (its pages stay known)."""
        for key in [k for k in self._bases if k[0] == session]:
            del self._bases[key]

    def take(
        self,
        session: int,
        memory: SessionMemory,
        state: ConversationState,
        trigger: str,
        seq: int,
        mono_ns: int,
        wall_ns: int,
        extra: dict[str, Any] | None = None,
        commit: Callable[[dict[str, Any]], None] | None = None,
    ) -> SnapshotResult:
        """Capture what the options say, write it, and return what was found."""
        started = time.monotonic()
        self.count += 1
        result = SnapshotResult(self.count)
        stats = result.stats
        configs, views = self._rings(memory, state)
        sink = _Sink(self.writer, self.index, stats)
        for extent in self._plan(memory, views, stats):
            self._capture(session, result.snapshot, memory, extent, sink, stats)
        problems = result.problems
        for view in views:
            problems += [("snapshot-ring", f"vring {view.index}: {p}") for p in view.problems]
        problems += self._inflight_problems(memory, state)
        info: dict[str, Any] = {
            "mode": self.options.mode,
            "address_space": state.address_space(),
            "features": state.features_acked,
            "protocol_features": state.protocol_acked,
            "rings": configs,
            "regions": [region.describe() for region in memory.regions],
            "inflight": memory.inflight.describe() if memory.inflight else None,
            "log": memory.log.describe() if memory.log else None,
            "stats": stats.as_dict(),
            "problems": [text for _, text in problems[:MAX_PROBLEMS]],
        }
        if len(problems) > MAX_PROBLEMS:
            info["problems_dropped"] = len(problems) - MAX_PROBLEMS
        result.seconds = time.monotonic() - started
        info["duration_us"] = int(result.seconds * 1e6)
        info.update(extra or {})
        if commit is not None:
            commit(info)
        self.writer.snapshot(result.snapshot, seq, mono_ns, wall_ns, session, trigger, info)
        return result

    # -- pieces ---------------------------------------------------------------------------

    def _plan(
        self, memory: SessionMemory, views: list[RingView], stats: CaptureStats
    ) -> list[Extent]:
        """The extents to capture: ring parts, then buffers (rings) or regions (full),
        then the inflight area and the dirty log."""
        ring_extents, _ = merge_extents(r for v in views for r in ring_parts(v))
        wanted = [r for v in views for r in ring_buffers(v, memory)]
        if self.options.mode == "full":
            tables = [r for r in wanted if r[0].startswith("indirect:")]
            readable = [
                (r.guest_phys_addr, r.area.readable()) for r in memory.regions if r.area is not None
            ]
            rest = merge_extents(tables)[0] + region_extents(readable)
        else:
            inside = []
            for role, addr, length in wanted:
                if memory.contains(addr, length):
                    inside.append((role, addr, length))
                else:
                    stats.outside_bytes += length
            rest, stats.left_out_bytes = merge_extents(inside, self.options.buffer_limit)
        return ring_extents + rest + self._areas(memory)

    def _rings(
        self, memory: SessionMemory, state: ConversationState
    ) -> tuple[list[dict[str, Any]], list[RingView]]:
        space = state.address_space()
        packed = state.has_virtio(spec.VIRTIO_F_RING_PACKED)
        event_idx = state.has_virtio(spec.VIRTIO_F_EVENT_IDX)
        indirect = state.has_virtio(spec.VIRTIO_F_INDIRECT_DESC)
        configs, views = [], []
        for index in sorted(state.rings):
            config = ring_config(
                state.rings[index],
                space,
                memory.regions,
                packed=packed,
                event_idx=event_idx,
                indirect=indirect,
            )
            if config is None:
                continue
            configs.append(config)
            views.append(decode_ring(config, memory))
        return configs, views

    @staticmethod
    def _areas(memory: SessionMemory) -> list[Extent]:
        out: list[Extent] = []
        for kind in ("inflight", "log"):
            shared = getattr(memory, kind)
            size = shared.area.readable() if shared is not None and shared.area else 0
            if size:
                out += merge_extents([(kind, 0, size)], space=kind)[0]
        return out

    def _capture(
        self,
        session: int,
        snapshot: int,
        memory: SessionMemory,
        extent: Extent,
        sink: _Sink,
        stats: CaptureStats,
    ) -> None:
        if extent.space == "gpa":
            chunks = memory.gpa_chunks(extent.addr, extent.size)
        else:
            chunks = memory.area_chunks(extent.space, extent.addr, extent.size)
        builder = MapBuilder()
        for chunk in whole_pages(chunks):
            count = chunk.size // PAGE_SIZE
            if chunk.missing:
                stats.missing_bytes += chunk.size
            if chunk.data is None:
                builder.zeros(count)
                stats.zero_pages += count
            else:
                stats.read_bytes += chunk.size
                nonzero = pages.scan(chunk.data, builder, sink)
                stats.zero_pages += count - nonzero
        items = builder.finish()
        if builder.pages != extent.pages:
            raise RuntimeError(f"{extent}: read {builder.pages} pages")
        stats.pages += extent.pages
        stats.extents += 1
        key = (session, extent.space, extent.addr, extent.pages)
        base = self._bases.get(key)
        if base is not None:
            written: PageMap = pages.delta(base[1], items)
            base_id = base[0]
        else:
            written, base_id = items, 0
        self.writer.extent(
            snapshot,
            session,
            extent.space,
            extent.addr,
            extent.pages,
            extent.role,
            base_id,
            written,
        )
        self._bases[key] = (snapshot, items)

    @staticmethod
    def _inflight_problems(
        memory: SessionMemory, state: ConversationState
    ) -> list[tuple[str, str]]:
        shared = memory.inflight
        if shared is None or shared.area is None:
            return []
        fields = shared.fields
        size = shared.area.readable()
        data = shared.area.read(0, min(size, 16 << 20)) or b""
        area = decode_inflight(
            data,
            fields.get("num_queues", 0),
            fields.get("queue_size", 0),
            packed=state.has_virtio(spec.VIRTIO_F_RING_PACKED),
        )
        out = [("snapshot-inflight", f"inflight area: {p}") for p in area.problems]
        for queue in area.queues:
            for problem in queue.problems:
                code = (
                    "inflight-batch-head"
                    if problem.startswith("last_batch_head")
                    else "snapshot-inflight"
                )
                out.append((code, f"inflight queue {queue.index}: {problem}"))
        return out


def whole_pages(chunks: Iterable[Chunk]) -> Iterator[Chunk]:
    """Chunks re-cut so every one starts and ends on a page boundary of the extent.

    Pieces split at an unaligned region boundary are joined into one page (holes
    become zero bytes, never more than a page of them); aligned chunks pass
    through untouched."""
    pending = bytearray()
    pending_at = 0
    pending_missing = False
    for chunk in chunks:
        offset, size, data, missing = chunk
        if not pending and offset % PAGE_SIZE == 0 and size % PAGE_SIZE == 0:
            yield chunk
            continue
        if not pending and offset % PAGE_SIZE:
            pending_at = offset - offset % PAGE_SIZE
            pending += bytes(offset % PAGE_SIZE)
        if pending:
            take = min(size, PAGE_SIZE - len(pending))
            pending += data[:take] if data is not None else bytes(take)
            pending_missing = pending_missing or missing
            offset, size = offset + take, size - take
            data = data[take:] if data is not None else None
            if len(pending) == PAGE_SIZE:
                yield Chunk(pending_at, PAGE_SIZE, bytes(pending), pending_missing)
                pending.clear()
                pending_missing = False
            if not size:
                continue
        whole = size // PAGE_SIZE * PAGE_SIZE
        if whole:
            yield Chunk(offset, whole, data[:whole] if data is not None else None, missing)
        if size > whole:
            pending_at = offset + whole
            pending += data[whole:] if data is not None else bytes(size - whole)
            pending_missing = missing
    if pending:
        pending += bytes(-len(pending) % PAGE_SIZE)
        yield Chunk(pending_at, len(pending), bytes(pending), pending_missing)
