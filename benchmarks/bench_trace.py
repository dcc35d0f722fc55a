"""Benchmarks of the trace path, printed as one table.

* (a) ``vhtrace show --json`` over a trace of synthetic messages (default 1,000,000):
  messages per second end to end (read, decompress, unpack, decode, analyse, JSON
  lines to /dev/null), next to the floor:
  ``zstd -dc FILE | <msgpack unpack loop>`` over the same file, and the ratio;
* (b) the write rate: messages per second through TraceWriter (records packed,
  compressed, frames flushed as the recorder does);
* (c) the bytes per message on disk.

Goals (issue 2): >= 200,000 msg/s decoded by show --json, >= 300,000 msg/s written.

Run: ``python benchmarks/bench_trace.py [--messages N] [--cache DIR]``. The trace is
generated once and kept in DIR (default: $TMPDIR/vhtrace-bench) under a name that
changes with the code that writes it. Not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

import vhtrace
from tests.support import synthetic
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.writer import TraceWriter, make_header

GOAL_SHOW = 200_000
GOAL_WRITE = 300_000

UNPACK_LOOP = """
import sys, msgpack
count = 0
for _ in msgpack.Unpacker(sys.stdin.buffer, raw=False, use_list=False, max_buffer_size=64 << 20):
    count += 1
print(count)
"""


def message_plan(count: int) -> list[tuple]:
    """The arguments of each TraceWriter call, built before any timing starts."""
    plan: list[tuple] = []
    session = 0
    for seq, (number, message) in enumerate(synthetic.messages(count), 1):
        if number != session:
            if session:
                plan.append(("event", seq, session, "session-end", {"reason": "eof"}))
            session = number
            plan.append(("event", seq, session, "session-start", {}))
        fds = [synthetic.fd_meta(kind) for kind in message.fd_kinds]
        plan.append(
            ("message", seq, number, message.channel.value, message.sender.value,
             message.frame.raw, fds)
        )  # fmt: skip
    return plan


def write_trace(path: Path, plan: list[tuple]) -> tuple[float, int]:
    """Write the plan as the recorder would; (seconds, messages)."""
    header = make_header(device="blk", endpoints={"frontend": "bench", "backend": "bench"})
    mono, wall = header["mono_ns"], header["wall_ns"]
    messages = 0
    start = time.perf_counter()
    writer = TraceWriter(str(path), header)
    message, event, maybe_flush = writer.message, writer.event, writer.maybe_flush
    for item in plan:
        when = item[1] * 1000
        if item[0] == "message":
            _, seq, session, channel, sender, raw, fds = item
            message(seq, mono + when, wall + when, session, channel, sender, raw, fds)
            messages += 1
            if not seq & 1023:
                maybe_flush()
        else:
            _, _, session, name, info = item
            event(mono + when, wall + when, session, name, info)
    writer.close({"messages": messages})
    return time.perf_counter() - start, messages


def code_digest() -> str:
    """Changes when the code that shapes the trace file changes."""
    digest = hashlib.sha256()
    package = Path(vhtrace.__file__).parent
    for module in (
        Path(synthetic.__file__),
        package / "trace/writer.py",
        package / "trace/format.py",
    ):
        digest.update(module.read_bytes())
    return digest.hexdigest()[:10]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: str) -> tuple[float, float, str]:
    """Run a shell command: (wall seconds, CPU seconds of all its processes, stdout).

    The CPU time stays meaningful on a busy machine, where the wall time does not."""
    cpu = children_cpu()
    start = time.perf_counter()
    result = subprocess.run(command, shell=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"benchmark command failed ({result.returncode}): {command}\n{result.stderr}")
    return elapsed, children_cpu() - cpu, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vhtrace-bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    trace = args.cache / f"synthetic-{args.messages}-v{fmt.FORMAT_VERSION}-{code_digest()}.vht"

    plan = message_plan(args.messages)
    # (b) the write rate: a fresh file each run, the cached one written only once
    with tempfile.TemporaryDirectory(dir=args.cache) as scratch:
        write_s, messages = write_trace(Path(scratch) / "write.vht", plan)
        if not trace.exists():
            shutil.move(Path(scratch) / "write.vht", trace)
    del plan
    size = trace.stat().st_size

    # reading alone, in this process: the share of the reader in (a)
    start = time.perf_counter()
    records = sum(1 for _ in TraceReader(trace))
    read_s = time.perf_counter() - start

    # (a) show --json end to end, then the floor over the same file
    show_s, show_cpu, _ = timed(
        f"{sys.executable} -m vhtrace.cli.main show --json {trace} > /dev/null"
    )
    if shutil.which("zstd"):
        floor_label = "floor: zstd -dc | msgpack unpack"
        floor_cmd = f"zstd -dc {trace} | {sys.executable} -c '{UNPACK_LOOP}'"
    else:  # no zstd binary: the same floor with python-zstandard
        floor_label = "floor: zstandard | msgpack unpack"
        floor_cmd = (
            f"{sys.executable} -c 'import zstandard,sys; zstandard.ZstdDecompressor()"
            f'.copy_stream(open("{trace}","rb"), sys.stdout.buffer)\' '
            f"| {sys.executable} -c '{UNPACK_LOOP}'"
        )
    floor_s, floor_cpu, floor_out = timed(floor_cmd)
    objects = int(floor_out.strip())

    def rate(seconds: float) -> str:
        return f"{messages / seconds:>12,.0f}"

    rows = [
        ("show --json, end to end", f"{show_s:8.2f}", rate(show_s),
         f">= {GOAL_SHOW:,}; CPU {show_cpu:.2f} s = {messages / show_cpu:,.0f} msg/s"),
        (floor_label, f"{floor_s:8.2f}", rate(floor_s),
         f"{objects:,} objects; CPU {floor_cpu:.2f} s (both processes)"),
        ("  show --json / floor", f"{show_s / floor_s:7.1f}x", "", ""),
        ("  of which reading", f"{read_s:8.2f}", rate(read_s), f"TraceReader, {records:,} records"),
        ("write (TraceWriter)", f"{write_s:8.2f}", rate(write_s), f">= {GOAL_WRITE:,}"),
        ("bytes per message on disk", f"{size / messages:8.1f}", "", f"({size / 1e6:.1f} MB)"),
    ]  # fmt: skip
    print(
        f"vhtrace {vhtrace.__version__} trace benchmark: {messages:,} synthetic messages "
        f"(vhost-user-blk sessions), Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'what':<36} {'time s':>8} {'msg/s':>12}  goal / note")
    for what, seconds, per_second, note in rows:
        print(f"{what:<36} {seconds:>8} {per_second:>12}  {note}".rstrip())


if __name__ == "__main__":
    main()
