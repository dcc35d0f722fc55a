"""``vhtrace memory TRACE --at N``: guest memory as a snapshot captured it."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from vhtrace.cli import common
from vhtrace.cli.verbs import help_of
from vhtrace.memory.pages import PAGE_SIZE
from vhtrace.memory.tracedata import Snapshot, page_plan, read_pages, read_snapshots

DEFAULT_LEN = 256
MAX_DUMP = 64 << 20
"""Bytes a hex dump shows at most (--out has no limit)."""
_SIZE = re.compile(r"^(0x[0-9a-f]+|\d+)\s*([kmgt]i?b?)?$", re.IGNORECASE)
_UNITS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_size(text: str) -> int:
    """'4096', '0x1000', '4k', '1MiB' -> bytes."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number (0x.., k, M, G)")
    number, unit = match.groups()
    return int(number, 0) << _UNITS[(unit or "")[:1].lower()]


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "memory",
        help=help_of("memory"),
        description="Print guest memory as snapshot N captured it (a hex dump), or write it "
        "to a file. Bytes the snapshot did not capture are shown as such (and written as "
        "zeros); the exit code is 1 if any were asked for.",
    )
    parser.add_argument("trace", help="trace file (read twice: not stdin)")
    parser.add_argument("--at", type=int, required=True, metavar="N", help="snapshot number")
    parser.add_argument(
        "--gpa", type=parse_size, default=None, metavar="ADDR", help="guest-physical address"
    )
    parser.add_argument(
        "--len",
        type=parse_size,
        default=None,
        metavar="LEN",
        help=f"bytes (default {DEFAULT_LEN}; with --out: the whole region holding ADDR)",
    )
    parser.add_argument(
        "--area",
        choices=("inflight", "log"),
        help="the inflight area or the dirty log instead of guest memory (--gpa is the offset)",
    )
    parser.add_argument("--out", metavar="FILE", help="write the bytes to FILE instead")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.trace == "-":
        raise common.UsageError("reads the trace twice: give a file, not stdin")
    space = args.area or "gpa"
    reader = common.open_trace(args.trace)
    scan = read_snapshots(reader, lambda n: n == args.at, lambda s, _: s == space)
    if not scan.snapshots:
        damaged = common.report_damage(reader)
        if damaged:
            return damaged
        have = f"the trace has 1 to {scan.total}" if scan.total else "the trace has none"
        common.fail(f"{args.trace}: no snapshot {args.at} ({have})")
    snapshot = scan.snapshots[0]
    start, length = _range(snapshot, space, args)
    if length <= 0:
        raise common.UsageError("--len must be positive")
    if args.out is None and length > MAX_DUMP:
        raise common.UsageError(f"a hex dump shows at most {MAX_DUMP >> 20} MiB: use --out")
    first = start - start % PAGE_SIZE
    plan = page_plan(snapshot.extents, space, first, start + length)
    wanted = {digest for digest in plan.values() if digest is not None}
    for problem in snapshot.problems:
        common.warn(f"snapshot {args.at}: {problem}")
    if args.out is not None:
        missing = _write(args, plan, wanted, start, length)
    else:
        store = read_pages(common.open_trace(args.trace), wanted)
        missing = _dump(plan, store, start, length, space)
    if missing:
        common.warn(f"{missing} of {length} bytes were not captured by snapshot {args.at}")
    return common.EXIT_FOUND if missing else common.EXIT_OK


def _range(snapshot: Snapshot, space: str, args: argparse.Namespace) -> tuple[int, int]:
    start = args.gpa or 0
    if args.len is not None:
        return start, args.len
    if args.out is None:
        return start, DEFAULT_LEN
    if space != "gpa":
        area: dict[str, Any] = snapshot.info.get(space) or {}
        return start, max(0, int(area.get("readable", 0)) - start)
    for region in snapshot.info.get("regions", ()):
        if region["gpa"] <= start < region["gpa"] + region["size"]:
            return region["gpa"], int(region.get("readable", region["size"]))
    raise common.UsageError(f"--gpa 0x{start:x} is in no region of snapshot {args.at}: give --len")


def _pages(start: int, length: int) -> range:
    first = start - start % PAGE_SIZE
    return range(first, start + length, PAGE_SIZE)


def _write(
    args: argparse.Namespace,
    plan: dict[int, bytes | None],
    wanted: set[bytes],
    start: int,
    length: int,
) -> int:
    """Write the range to --out (sparse zeros where nothing is known); bytes not captured."""
    where: dict[bytes, list[int]] = {}
    for addr, digest in plan.items():
        if digest is not None:
            where.setdefault(digest, []).append(addr)
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        common.fail(f"{args.out}: cannot write: {exc.strerror}")
    try:
        os.ftruncate(fd, length)

        def put(digest: bytes, data: bytes) -> None:
            for addr in where.pop(digest, ()):
                lo, hi = max(addr, start), min(addr + PAGE_SIZE, start + length)
                os.pwrite(fd, data[lo - addr : hi - addr], lo - start)

        read_pages(common.open_trace(args.trace), wanted, put)
    finally:
        os.close(fd)
    unread = [addr for addrs in where.values() for addr in addrs]  # named, never found
    missing = _missing(plan, start, length) + sum(
        min(addr + PAGE_SIZE, start + length) - max(addr, start) for addr in unread
    )
    common.warn(f"wrote {length} bytes (0x{start:x}..0x{start + length:x}) to {args.out}")
    return missing


def _missing(plan: dict[int, bytes | None], start: int, length: int) -> int:
    total = 0
    for addr in _pages(start, length):
        if addr not in plan:
            total += min(addr + PAGE_SIZE, start + length) - max(addr, start)
    return total


def _dump(
    plan: dict[int, bytes | None], store: dict[bytes, bytes], start: int, length: int, space: str
) -> int:
    """Hex dump like ``hexdump -C``: repeated lines as ``*``, runs not captured as one line."""
    out = sys.stdout
    missing = 0
    previous: bytes | None = None
    starred = False
    run_start: int | None = None
    label = "" if space == "gpa" else f"{space}+"

    def flush_missing(upto: int) -> None:
        nonlocal run_start
        if run_start is not None:
            out.write(f"{label}0x{run_start:016x}  not captured ({upto - run_start} bytes)\n")
            run_start = None

    pos, end = start, start + length
    while pos < end:
        page = pos - pos % PAGE_SIZE
        stop = min(end, page + PAGE_SIZE)
        digest = plan.get(page, b"")
        data = (
            None if page not in plan else bytes(PAGE_SIZE) if digest is None else store.get(digest)  # type: ignore[arg-type]
        )
        if data is None:
            missing += stop - pos
            if run_start is None:
                run_start = pos
            previous, starred = None, False
            pos = stop
            continue
        flush_missing(pos)
        while pos < stop:
            line_end = min(stop, pos - pos % 16 + 16)
            chunk = data[pos - page : line_end - page]
            if chunk == previous and len(chunk) == 16:
                if not starred:
                    out.write("*\n")
                    starred = True
            else:
                out.write(_hex_line(label, pos, chunk) + "\n")
                previous, starred = chunk, False
            pos = line_end
    flush_missing(end)
    if starred:
        out.write(f"{label}0x{end:016x}\n")
    out.flush()
    return missing


def _hex_line(label: str, addr: int, chunk: bytes) -> str:
    pad = addr % 16
    cells = ["  "] * pad + [f"{b:02x}" for b in chunk]
    cells += ["  "] * (16 - len(cells))
    text = " " * pad + "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
    return f"{label}0x{addr - pad:016x}  {' '.join(cells[:8])}  {' '.join(cells[8:])}  |{text:<16}|"
