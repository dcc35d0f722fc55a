"""Benchmarks of vhtrace replay, printed as one table.

* replay rate (messages per second crossing the wire, both directions) of the recorded
  QEMU boot session ``traces/qemu-qsd-blk.vht`` played as the front-end against:
  - ``vhtrace replay --serve`` (the recorded back-end, in-process): replay's own ceiling;
  - ``mockbackend`` (in-process): the mock answers differently from qemu-storage-daemon,
    so its trace is first recorded through ``vhtrace record`` (replaying the QSD trace
    against it with ``--keep-going``), and that trace is what is timed, with no
    divergence;
  - qemu-storage-daemon (a real process, one connection per replay);
  each replay ``--repeat`` times: the median wall time of the whole call (reading the
  trace included) and of the exchange alone (``elapsed`` in the result);
* the boot trace: the recorded session's span (first to last message), its control-plane
  time (the sum of the gaps between messages inside bursts, a gap of more than
  ``--burst-ms`` being the guest running, not the control plane), the wall time of
  replaying it as fast as possible, and with ``--realtime``.

Run: ``python benchmarks/bench_replay.py [--repeat 200]``. Not a test: it asserts
nothing about time.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.lab import StorageDaemon, images, missing
from vhtrace.lab.proc import is_listening
from vhtrace.replay import ReplayOptions, replay_frontend, serve_backend
from vhtrace.trace.reader import TraceReader

ROOT = Path(__file__).resolve().parents[1]
BOOT_TRACE = ROOT / "traces" / "qemu-qsd-blk.vht"
MiB = 1 << 20
OPTIONS = ReplayOptions(timeout=5.0, connect_timeout=5.0)

Row = tuple[str, str, str, str]


def timed_replays(trace: Path, sock: Path, repeat: int, before: Callable[[], object]) -> Row:
    """Replay ``trace`` against ``sock`` ``repeat`` times; medians and the rate."""
    walls, wires, messages = [], [], 0
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        result = replay_frontend(trace, sock, OPTIONS)
        walls.append(time.perf_counter() - start)
        if result.exit_code != 0:
            why = result.error or result.divergences[0].headline
            raise SystemExit(f"replay against {sock} did not go as recorded: {why}")
        wires.append(result.elapsed)
        messages = result.messages
    wall, wire = statistics.median(walls), statistics.median(wires)
    return (
        f"{messages}",
        f"{wall * 1e3:7.2f} ms",
        f"{wire * 1e3:7.2f} ms",
        f"{messages / wire:9,.0f} msg/s",
    )


def served(trace: Path, sock: Path) -> Callable[[], object]:
    """A fresh ``replay --serve`` of ``trace`` before each replay (it serves one session)."""
    previous: list[threading.Thread] = []

    def start() -> object:
        for thread in previous:
            thread.join(5)
        previous.clear()
        ready = threading.Event()
        thread = threading.Thread(
            target=serve_backend,
            kwargs={
                "trace": trace,
                "path": sock,
                "options": ReplayOptions(timeout=None),
                "on_ready": lambda _: ready.set(),
            },
            daemon=True,
        )
        thread.start()
        previous.append(thread)
        ready.wait(5)
        return thread

    return start


def record_mock_trace(work: Path, mock_sock: Path) -> Path:
    """The boot session as the mock answers it: QSD's trace replayed through the recorder."""
    trace, front = work / "mock.vht", work / "front.sock"
    recorder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vhtrace.cli.main",
            "record",
            "--listen",
            str(front),
            "--connect",
            str(mock_sock),
            "-w",
            str(trace),
            "--once",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not is_listening(front):
        time.sleep(0.02)
    replay_frontend(BOOT_TRACE, front, ReplayOptions(keep_going=True))
    recorder.wait(30)
    return trace


def boot_timeline(burst_ms: float) -> tuple[float, float, int]:
    """(span, control-plane seconds, messages) of the recorded boot session."""
    with TraceReader(BOOT_TRACE) as reader:
        times = [
            i.record.mono_ns / 1e9
            for i in analyser_for(reader.header).run(reader)
            if isinstance(i, AnalysedMessage)
        ]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return times[-1] - times[0], sum(g for g in gaps if g <= burst_ms / 1e3), len(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="replays per peer")
    parser.add_argument(
        "--burst-ms",
        type=float,
        default=10.0,
        help="a longer gap between messages is the guest running",
    )
    args = parser.parse_args()
    logging.getLogger("mockbackend").setLevel(logging.ERROR)  # its notes on QEMU's features
    rows: list[tuple[str, Row]] = []
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        work = Path(tmp)
        sock = work / "served.sock"
        serve_row = timed_replays(BOOT_TRACE, sock, args.repeat, served(BOOT_TRACE, sock))
        rows.append(("boot trace vs vhtrace replay --serve", serve_row))

        try:
            from mockbackend import BlkDevice, MockBackend, Script
        except ImportError as exc:
            rows.append(("boot trace vs mockbackend", ("not run", str(exc), "", "")))
        else:
            image = work / "mock.img"
            image.write_bytes(bytes(64 * MiB))
            mock_sock = work / "mock.sock"
            mock = MockBackend(Script(BlkDevice(image))).start(mock_sock, sessions=None)
            mock_trace = record_mock_trace(work, mock_sock)
            rows.append(
                (
                    "boot session vs mockbackend (its own trace)",
                    timed_replays(mock_trace, mock_sock, args.repeat, lambda: None),
                )
            )
            mock.stop()

        peer, fast, realtime, realtime_wall = "vhtrace replay --serve", serve_row, None, 0.0
        absent = missing("qsd", "qemu-img")
        if absent:
            rows.append(("boot trace vs qemu-storage-daemon", ("not run", absent[0], "", "")))
        else:
            image = images.create_image(work / "qsd.img", 64 * MiB)
            qsd = StorageDaemon(image, work / "qsd.sock", work / "qsd.log").start()
            try:
                fast = timed_replays(BOOT_TRACE, qsd.socket, args.repeat, lambda: None)
                rows.append(("boot trace vs qemu-storage-daemon", fast))
                peer = "qemu-storage-daemon"
                start = time.perf_counter()
                realtime = replay_frontend(BOOT_TRACE, qsd.socket, ReplayOptions(realtime=True))
                realtime_wall = time.perf_counter() - start
            finally:
                qsd.stop()

    span, control, count = boot_timeline(args.burst_ms)
    wall = float(fast[1].split()[0]) / 1e3
    table = [
        ("benchmark", ("messages", "median wall", "median exchange", "rate")),
        *rows,
        (
            "recorded boot session: span, first to last message",
            (str(count), f"{span:7.3f} s", "", ""),
        ),
        (
            f"recorded boot session: control plane (gaps <= {args.burst_ms:g} ms)",
            (str(count), f"{control * 1e3:7.2f} ms", "", ""),
        ),
        (
            f"replayed boot session vs {peer}, fastest",
            (str(count), *fast[1:3], f"{span / wall:9,.0f} x faster than the span"),
        ),
    ]
    if realtime is not None:
        table.append(
            (
                f"replayed boot session vs {peer}, --realtime",
                (
                    str(realtime.messages),
                    f"{realtime_wall:7.3f} s",
                    f"{realtime.elapsed:7.3f} s",
                    f"{realtime_wall / span:9.3f} x the span",
                ),
            )
        )
    width = max(len(name) for name, _ in table)
    widths = [max(len(cells[i]) for _, cells in table) for i in range(4)]
    for n, (name, cells) in enumerate(table):
        line = "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        print(f"{name:<{width}}  {line}")
        if n == 0:
            print(f"{'-' * width}  " + "  ".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
