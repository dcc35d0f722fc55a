"""Benchmark of ``vhtrace report``, printed as one table.

The report (HTML, and the SVG of the same trace) of a trace of synthetic messages
(default 100,000: back-to-back vhost-user-blk sessions from ``tests.support.synthetic``, written
as bench_trace.py writes its trace), timed end to end in a subprocess next to
``vhtrace show --json`` of the same file in the same run: the ratio is the figure
(goal, issue 14: the HTML report in under 2x the time of show --json). Wall and CPU
time both: on a busy machine the CPU time is the steadier one. Each command runs
``--runs`` times, interleaved, and the median counts.

Run: ``python benchmarks/bench_report.py [--messages N] [--runs R] [--cache DIR]``.
Not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_trace  # the trace generator and the timing helper

import vhtrace
from vhtrace.trace import format as fmt

GOAL_RATIO = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vhtrace-bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    digest = bench_trace.code_digest()
    trace = args.cache / f"synthetic-{args.messages}-v{fmt.FORMAT_VERSION}-{digest}.vht"
    if not trace.exists():
        bench_trace.write_trace(trace, bench_trace.message_plan(args.messages))
    python = sys.executable
    with tempfile.TemporaryDirectory(dir=args.cache) as scratch:
        html, svg = Path(scratch) / "report.html", Path(scratch) / "report.svg"
        commands = {
            "show --json": f"{python} -m vhtrace.cli.main show --json {trace} > /dev/null",
            "report -o report.html": f"{python} -m vhtrace.cli.main report {trace} -o {html}",
            "report --svg": f"{python} -m vhtrace.cli.main report --svg {trace} -o {svg}",
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                wall, cpu, _ = bench_trace.timed(command)
                times[name].append((wall, cpu))
        sizes = {"report -o report.html": html.stat().st_size,
                 "report --svg": svg.stat().st_size}  # fmt: skip

    def median(name: str, which: int) -> float:
        return statistics.median(t[which] for t in times[name])

    base_wall, base_cpu = median("show --json", 0), median("show --json", 1)
    print(f"vhtrace {vhtrace.__version__} report benchmark: {args.messages:,} synthetic "
          f"messages, median of {args.runs} runs, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    print(f"| {'what':<22} | {'wall s':>7} | {'x show':>6} | {'CPU s':>6} | {'x show':>6} "
          f"| {'output':>9} | goal |")  # fmt: skip
    print(f"|{'-' * 24}|{'-' * 9}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 11}|------|")
    for name in commands:
        wall, cpu = median(name, 0), median(name, 1)
        size = f"{sizes[name] / 1e6:.1f} MB" if name in sizes else ""
        goal = f"< {GOAL_RATIO:g}x" if name == "report -o report.html" else ""
        print(f"| {name:<22} | {wall:7.2f} | {wall / base_wall:5.2f}x | {cpu:6.2f} | "
              f"{cpu / base_cpu:5.2f}x | {size:>9} | {goal} |")  # fmt: skip


if __name__ == "__main__":
    main()
