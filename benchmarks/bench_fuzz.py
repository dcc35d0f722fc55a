"""Benchmark of ``vhtrace fuzz`` against qemu-storage-daemon, next to replay of the same trace.

Rows (``traces/qemu-qsd-blk.vht``, 33 front-end messages a session):

* ``replay (replay_frontend)``: the whole ``vhtrace replay`` call against a running
  qemu-storage-daemon, trace reading included, ``--repeat`` times: sessions per second;
* ``fuzz loop, unmutated case``: the fuzzer's per-iteration work (connect, the replay's
  session loop with the fuzz player, oracles) on the template as recorded, against the
  same daemon: what one iteration costs without mutation;
* ``fuzz campaign``: a real campaign (mutations, restarts of the daemon after each crash,
  crash/hang/panic/violation oracles; no minimization), ``--iterations`` long, the daemon
  started by the fuzzer from the lab's command line: iterations per second, and how often
  it had to restart the daemon;
* ratios against the replay rate measured in the same run. The goal is >= 100 it/s on
  two CPUs.

Run: ``python benchmarks/bench_fuzz.py [--iterations 2000] [--repeat 200]``. Not a test:
it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vhtrace.fuzz.campaign import Campaign, FuzzOptions, load_template
from vhtrace.fuzz.driver import DriveOptions, run_case
from vhtrace.fuzz.oracle import judge
from vhtrace.fuzz.target import Target, parse_command, templated
from vhtrace.lab import StorageDaemon, images, missing
from vhtrace.lab.backends import qsd_command
from vhtrace.replay import ReplayOptions, replay_frontend
from vhtrace.replay.memsource import SnapshotSource

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "traces" / "qemu-qsd-blk.vht"


def replay_rate(sock: Path, repeat: int) -> float:
    walls = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = replay_frontend(TRACE, sock, ReplayOptions(timeout=5.0))
        walls.append(time.perf_counter() - start)
        if result.exit_code != 0:
            raise SystemExit(f"replay diverged: {result.error or result.divergences[0].headline}")
    return 1.0 / statistics.median(walls)


def unmutated_rate(command: str, repeat: int) -> float:
    target = Target(parse_command(command))
    template = load_template(TRACE, None)
    memory = SnapshotSource.of_trace(TRACE)
    try:
        target.start()
        start = time.perf_counter()
        for _ in range(repeat):
            verdict = judge(run_case(target, template.case, memory, DriveOptions()))
            if verdict.kind != "ok":
                raise SystemExit(f"the unmutated trace did not go through: {verdict.detail}")
        return repeat / (time.perf_counter() - start)
    finally:
        target.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    reasons = missing("qsd", "qemu-img")
    if reasons:
        raise SystemExit("; ".join(reasons))
    with tempfile.TemporaryDirectory(prefix="vht-bf-", dir="/tmp") as tmp:
        work = Path(tmp)
        image = images.create_image(work / "disk.img", 64 << 20)
        with StorageDaemon(image, work / "qsd.sock", work / "qsd.log") as qsd:
            replay = replay_rate(qsd.socket, args.repeat)
        command = templated(qsd_command(image, work / "t.sock"), work / "t.sock")
        plain = unmutated_rate(command, args.repeat)
        target = Target(parse_command(command))
        options = FuzzOptions(iterations=args.iterations, seed=args.seed, confirm=False)
        report = Campaign(TRACE, target, options).run()
    rate = report.iterations / report.elapsed
    rows = [
        ("replay (replay_frontend), whole call", f"{replay:8.1f} /s", "1.00", ""),
        ("fuzz loop, unmutated case", f"{plain:8.1f} it/s", f"{plain / replay:.2f}", ""),
        (
            f"fuzz campaign, {report.iterations} iterations",
            f"{rate:8.1f} it/s",
            f"{rate / replay:.2f}",
            f"{report.starts - 1} restarts, {dict(report.kinds)}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"vhtrace fuzz vs replay, {TRACE.name} against qemu-storage-daemon (goal >= 100 it/s)")
    print(f"{'':{width}}  {'rate':>13}  {'/replay':>7}  notes")
    for name, value, ratio, notes in rows:
        print(f"{name:{width}}  {value:>13}  {ratio:>7}  {notes}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
