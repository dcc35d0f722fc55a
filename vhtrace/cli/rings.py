"""``vhtrace rings TRACE``: each ring's state at each snapshot of a trace."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from vhtrace.cli import common
from vhtrace.cli.verbs import help_of
from vhtrace.memory import pages, report
from vhtrace.memory.plan import RingView, config_problem, decode_ring, packed_chains
from vhtrace.memory.tracedata import (
    RING_ROLES,
    Snapshot,
    SnapshotMemory,
    page_plan,
    read_pages,
    read_snapshots,
)


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "rings",
        help=help_of("rings"),
        description="Decode the vrings (and the inflight area) captured by each snapshot of a "
        "trace recorded with --snapshot: indices, the back-end's position from "
        "GET/SET_VRING_BASE, requests in flight and their descriptor chains, recent "
        "completions, and whatever is wrong with them.",
    )
    parser.add_argument("trace", help="trace file (read twice: not stdin)")
    parser.add_argument("--at", type=int, metavar="N", help="only snapshot N")
    parser.add_argument("--ring", type=int, metavar="I", help="only vring I")
    parser.add_argument(
        "--recent",
        type=int,
        default=report.DEFAULT_RECENT,
        metavar="K",
        help=f"completions shown per ring (default {report.DEFAULT_RECENT})",
    )
    parser.add_argument(
        "--all", action="store_true", help="every in-flight request and every used entry"
    )
    parser.add_argument(
        "--peek",
        type=int,
        default=0,
        metavar="N",
        help="show the first N bytes of every buffer (hex)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per ring")
    parser.set_defaults(run=run)


def _ring_part(space: str, role: str) -> bool:
    return space == "inflight" or role.partition(":")[0] in RING_ROLES


def _with_buffers(space: str, role: str) -> bool:
    return _ring_part(space, role) or role.partition(":")[0] in ("buffer", "region")


def run(args: argparse.Namespace) -> int:
    if args.trace == "-":
        raise common.UsageError("reads the trace twice: give a file, not stdin")
    reader = common.open_trace(args.trace)
    start_ns = int(reader.header.get("mono_ns", 0))
    want = None if args.at is None else (lambda number: number == args.at)
    scan = read_snapshots(reader, want, _with_buffers if args.peek else _ring_part)
    if scan.problem and not scan.snapshots:
        return common.report_damage(reader)
    if not scan.snapshots:
        if args.at is not None and scan.total:
            common.fail(f"{args.trace}: no snapshot {args.at} (the trace has 1 to {scan.total})")
        common.fail(f"{args.trace}: no snapshots (recorded with --memory=none, or version 1)")
    wanted = {
        digest
        for snapshot in scan.snapshots
        for extent in snapshot.extents
        if _ring_part(extent.space, extent.role)
        for _, digest in pages.iter_hashes(extent.items)
    }
    store = read_pages(common.open_trace(args.trace), wanted)
    if args.peek:  # a third pass for the first bytes of the buffers the chains point at
        more = _peeked_pages(scan.snapshots, store, args) - store.keys()
        store.update(read_pages(common.open_trace(args.trace), more))
    out = sys.stdout
    for snapshot in scan.snapshots:
        if args.json:
            for obj in _json(snapshot, store, args):
                out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        else:
            out.write("\n".join(_lines(snapshot, store, start_ns, args)) + "\n")
    out.flush()
    return common.report_damage(reader)


def _peeked_pages(
    snapshots: list[Snapshot], store: dict[bytes, bytes], args: argparse.Namespace
) -> set[bytes]:
    """Hashes of the pages holding the first --peek bytes of the buffers shown."""
    found: set[bytes] = set()
    for snapshot in snapshots:
        for view, memory in _views(snapshot, store, args.ring):
            report.ring_lines(view, memory, args.recent, args.all)  # walks the chains shown
            chains = list(view.chains.values())
            if view.packed is not None:
                chains += [c for part in packed_chains(view, memory) for c in part]
            for desc in (d for chain in chains for d in chain.buffers):
                end = desc.addr + min(desc.len, args.peek)
                plan = page_plan(snapshot.extents, "gpa", desc.addr, end)
                found |= {digest for digest in plan.values() if digest is not None}
    return found


def _views(
    snapshot: Snapshot, store: dict[bytes, bytes], ring: int | None
) -> Iterator[tuple[RingView, SnapshotMemory]]:
    memory = SnapshotMemory(snapshot.extents, store)
    for config in snapshot.info.get("rings") or ():
        if config_problem(config) is None and (ring is None or config["index"] == ring):
            yield decode_ring(config, memory), memory


def _inflight_bytes(snapshot: Snapshot, store: dict[bytes, bytes]) -> bytes | None:
    area = snapshot.info.get("inflight")
    if not area:
        return None
    size = int(area.get("readable", 0))
    return SnapshotMemory(snapshot.extents, store, "inflight").read(0, size) if size else None


def _lines(
    snapshot: Snapshot, store: dict[bytes, bytes], start_ns: int, args: argparse.Namespace
) -> list[str]:
    lines = [report.title(snapshot, start_ns)]
    lines += [f"  !! {problem}" for problem in snapshot.problems]
    for config in snapshot.info.get("rings") or ():
        problem = config_problem(config)
        if problem:
            lines.append(f"  !! a ring of this snapshot cannot be decoded: {problem}")
    if not snapshot.info.get("rings"):
        lines.append("  no rings configured")
    for view, memory in _views(snapshot, store, args.ring):
        lines += report.ring_lines(view, memory, args.recent, args.all, args.peek)
    lines += report.inflight_lines(snapshot.info, _inflight_bytes(snapshot, store))
    return lines


def _json(
    snapshot: Snapshot, store: dict[bytes, bytes], args: argparse.Namespace
) -> Iterator[dict[str, Any]]:
    record = snapshot.record
    head = {
        "snapshot": record.snapshot,
        "seq": record.seq,
        "session": record.session,
        "trigger": record.trigger,
        "mono_ns": record.mono_ns,
    }
    for view, memory in _views(snapshot, store, args.ring):
        yield {"type": "ring", **head, **report.ring_json(view, memory, args.recent)}
    area = report.inflight_area(snapshot.info, _inflight_bytes(snapshot, store))
    if area is not None:
        queues = [
            {
                "queue": q.index,
                "version": q.version,
                "desc_num": q.desc_num,
                "used_idx": q.used_idx,
                "last_batch_head": q.last_batch_head,
                "inflight": [[d.index, d.counter] for d in q.inflight],
                "problems": q.problems,
            }
            for q in area.queues
        ]
        yield {"type": "inflight", **head, "queues": queues, "problems": area.problems}


def snapshot_texts(path: str) -> dict[int, list[str]]:
    """Each snapshot's ``vhtrace rings`` view (default options), by snapshot number: what
    ``vhtrace report`` shows on a snapshot's marker. Empty for a trace without snapshots."""
    options = argparse.Namespace(ring=None, recent=report.DEFAULT_RECENT, all=False, peek=0)
    reader = common.open_trace(path)
    start_ns = int(reader.header.get("mono_ns", 0))
    scan = read_snapshots(reader, None, _ring_part)
    reader.close()
    if not scan.snapshots:
        return {}
    wanted = {
        digest
        for snapshot in scan.snapshots
        for extent in snapshot.extents
        if _ring_part(extent.space, extent.role)
        for _, digest in pages.iter_hashes(extent.items)
    }
    store = read_pages(common.open_trace(path), wanted)
    return {s.number: _lines(s, store, start_ns, options) for s in scan.snapshots}
