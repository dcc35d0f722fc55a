"""Benchmarks of shared-memory snapshots, printed as one table.

* a 1 GiB memfd, mostly zero plus 5% random pages, snapshotted with ``--memory=full``
  (the recorder's own Snapshotter, writing a real trace): the first snapshot in GB/s,
  next to what the same bytes cost to copy (pread of the memfd, a memcpy in RAM) and
  to compress with ``zstd -1``; a second snapshot of the unchanged memory (time, bytes
  added); the trace size against the raw size; the recorder's peak RSS. Twice: with
  the zero pages never written (holes, as in a fresh guest) and with them written
  (a guest that zeroed its memory: every page must be read and compared);
* the relay during such a snapshot: round trips of GET_FEATURES through the real
  proxy between fake peers while the recorder snapshots the 1 GiB image (p50, max),
  against the same with no snapshot;
* the real stack: QEMU + qemu-storage-daemon + a Linux guest that boots, writes and
  reads back a pattern (``scenarios.blk_readback``), QEMU start to exit: straight to
  the back-end, through ``vhtrace record --memory=none``, and with the default
  snapshots (ring start and stop); median of RUNS runs; the ratio to straight.

Run: ``python benchmarks/bench_snapshot.py [--size-mib 1024] [--runs 3] [--no-lab]``.
Not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

from tests.support import scenarios
from vhtrace.lab import Workspace, missing
from vhtrace.memory.access import SessionMemory
from vhtrace.memory.capture import SnapshotOptions, Snapshotter
from vhtrace.protocol.messages import build
from vhtrace.protocol.state import ConversationState
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import SnapshotRecord
from vhtrace.trace.writer import TraceWriter, make_header
from vhtrace.wire import MessageReader, send_all

MiB = 1 << 20
PAGE = 4096
RANDOM_FRACTION = 0.05


def make_image(size: int, zero_filled: bool, seed: int = 7) -> int:
    """A memfd of ``size`` bytes: 5% random pages, the rest zero (holes or written)."""
    fd = os.memfd_create("bench-guest", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    if zero_filled:
        zeros = bytes(MiB)
        for offset in range(0, size, MiB):
            os.pwrite(fd, zeros, offset)
    rng = random.Random(seed)
    pages = size // PAGE
    block = rng.randbytes(64 * PAGE)
    for n, page in enumerate(rng.sample(range(pages), int(pages * RANDOM_FRACTION))):
        os.pwrite(fd, block[(n % 64) * PAGE : (n % 64 + 1) * PAGE][:8] + rng.randbytes(PAGE - 8),
                  page * PAGE)  # fmt: skip
    return fd


def region(size: int) -> dict[str, int]:
    return {"guest_phys_addr": 0, "memory_size": size, "userspace_addr": 1 << 46,
            "mmap_offset": 0}  # fmt: skip


def snapshot_rows(size: int, zero_filled: bool, directory: Path) -> dict[str, float]:
    fd = make_image(size, zero_filled)
    memory = SessionMemory()
    memory.add_region(region(size), os.dup(fd), 1)
    state = ConversationState()
    path = directory / f"full-{int(zero_filled)}.vht"
    writer = TraceWriter(str(path), make_header())
    shots = Snapshotter(writer, SnapshotOptions("full"))
    base = writer.bytes_written
    start = time.perf_counter()
    first = shots.take(1, memory, state, "signal", 0, 0, 0)
    writer.flush()
    first_s = time.perf_counter() - start
    first_bytes = writer.bytes_written - base
    start = time.perf_counter()
    shots.take(1, memory, state, "signal", 0, 0, 0)
    writer.flush()
    second_s = time.perf_counter() - start
    second_bytes = writer.bytes_written - base - first_bytes
    writer.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    memory.close()

    start = time.perf_counter()
    for offset in range(0, size, MiB):
        os.pread(fd, MiB, offset)
    pread_s = time.perf_counter() - start
    zstd_s, zstd_bytes = zstd_one(fd)
    os.close(fd)
    return {
        "first_s": first_s,
        "first_bytes": first_bytes,
        "nonzero_bytes": first.stats.new_bytes,
        "second_s": second_s,
        "second_bytes": second_bytes,
        "pread_s": pread_s,
        "zstd_s": zstd_s,
        "zstd_bytes": zstd_bytes,
        "rss": rss,
        "trace_bytes": path.stat().st_size,
    }


def memcpy_seconds(size: int) -> float:
    source = bytes(size)
    start = time.perf_counter()
    copy = bytearray(source)
    seconds = time.perf_counter() - start
    del copy, source
    return seconds


def zstd_one(fd: int) -> tuple[float, int]:
    """``zstd -1`` of the image (read from the memfd): seconds and output bytes."""
    program = shutil.which("zstd")
    os.lseek(fd, 0, os.SEEK_SET)
    if program is None:
        import zstandard

        compressor = zstandard.ZstdCompressor(level=1)
        start = time.perf_counter()
        total = 0
        with os.fdopen(os.dup(fd), "rb") as f:
            for chunk in compressor.read_to_iter(f, read_size=MiB):
                total += len(chunk)
        return time.perf_counter() - start, total
    start = time.perf_counter()
    proc = subprocess.Popen([program, "-1", "-T1", "-q", "-c"], stdin=fd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    total = 0
    while chunk := proc.stdout.read(MiB):
        total += len(chunk)
    proc.wait()
    return time.perf_counter() - start, total


def relay_rows(size: int, directory: Path, rounds: int = 400) -> dict[str, float]:
    """GET_FEATURES round trips through ``vhtrace record`` (its own process, as in use),
    idle and while it takes a full snapshot of the 1 GiB image (SIGUSR1)."""
    fd = make_image(size, zero_filled=True)
    front, back = str(directory / "front.sock"), str(directory / "back.sock")
    trace = directory / "relay.vht"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(back)
    server.listen(1)
    recorder = subprocess.Popen(
        [sys.executable, "-m", "vhtrace.cli.main", "record", "--listen", front, "--connect",
         back, "-w", str(trace), "--snapshot", "signal", "--memory", "full"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    fe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + 15
    while True:
        try:
            fe.connect(front)
            break
        except OSError:
            assert time.monotonic() < deadline, "vhtrace record did not start"
            time.sleep(0.05)
    be, _ = server.accept()
    fe_reader, be_reader = MessageReader(fe), MessageReader(be)

    def echo() -> None:
        while (frame := be_reader.read()) is not None:
            for got in frame.fds:
                os.close(got)
            if frame.request == 1:
                send_all(be, build("GET_FEATURES", {"features": 1}, reply=True).raw)

    threading.Thread(target=echo, daemon=True).start()
    send_all(fe, build("ADD_MEM_REG", {"padding": 0, **region(size)}).raw, (fd,))
    request = build("GET_FEATURES").raw

    def round_trip() -> tuple[int, float]:
        start = time.monotonic_ns()
        send_all(fe, request)
        fe_reader.read()
        return start, (time.monotonic_ns() - start) / 1e9

    idle = [round_trip()[1] for _ in range(rounds)]
    recorder.send_signal(signal.SIGUSR1)
    samples = []
    until = time.monotonic() + 3.0
    while time.monotonic() < until:
        samples.append(round_trip())
    fe.close()
    be.close()
    recorder.send_signal(signal.SIGINT)
    recorder.wait(30)
    server.close()
    os.close(fd)
    with TraceReader(trace) as reader:
        (shot,) = [r for r in reader if isinstance(r, SnapshotRecord)]
    begin = shot.mono_ns
    finish = begin + int(shot.info["duration_us"]) * 1000
    busy = [seconds for start, seconds in samples if begin <= start <= finish]
    return {
        "idle_p50": statistics.median(idle),
        "idle_max": max(idle),
        "idle_p99": statistics.quantiles(idle, n=100)[98],
        "busy_p99": statistics.quantiles(busy, n=100)[98] if len(busy) > 1 else float("nan"),
        "busy_p50": statistics.median(busy) if busy else float("nan"),
        "busy_max": max(busy) if busy else float("nan"),
        "busy_n": len(busy),
        "snapshot_s": (finish - begin) / 1e9,
    }


def lab_rows(runs: int, cache: Path) -> dict[str, list[float]] | str:
    reasons = missing("qemu", "qsd", "qemu-img", "busybox", "kernel")
    if reasons:
        return "; ".join(reasons)
    variants = {"direct": None, "record --memory=none": ("--memory", "none"),
                "record, default snapshots": ()}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, record in variants.items():  # interleaved: drift hits all alike
            with tempfile.TemporaryDirectory() as tmp, Workspace(Path(tmp), cache) as lab:
                outcome = scenarios.blk_readback(lab, record=record)
                times[name].append(float(outcome.notes["seconds"]))  # type: ignore[arg-type]
    return times


def gbps(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e9:.2f} GB/s ({seconds * 1000:.0f} ms)"


def human(n: float) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n:.0f} B"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-lab", action="store_true", help="skip the real-stack rows")
    args = parser.parse_args()
    size = args.size_mib * MiB
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for zero_filled in (False, True):
            kind = "zero pages written" if zero_filled else "zero pages are holes"
            r = snapshot_rows(size, zero_filled, directory)
            rows += [
                (f"first snapshot, {kind}", gbps(size, r["first_s"]), ">= 1 GB/s"),
                ("  pread of the memfd (copy floor)", gbps(size, r["pread_s"]), ""),
                ("  zstd -1 of the image", gbps(size, r["zstd_s"]) + f", {human(r['zstd_bytes'])}",
                 ""),
                ("  trace bytes / raw (non-zero)",
                 f"{human(r['first_bytes'])} / {human(size)} ({human(r['nonzero_bytes'])})", ""),
                ("  second snapshot, unchanged",
                 f"{r['second_s'] * 1000:.0f} ms, +{human(r['second_bytes'])} "
                 f"({100 * r['second_bytes'] / r['first_bytes']:.3f}% of the first)", "< 1%"),
                ("  recorder peak RSS", human(r["rss"]), "bounded"),
            ]  # fmt: skip
        rows.append(("memcpy of the image in RAM", gbps(size, memcpy_seconds(size)), ""))
        relay = relay_rows(size, directory)
        rows.append(("relay round trip, idle (p50 / p99 / max)",
                     f"{relay['idle_p50'] * 1e6:.0f} / {relay['idle_p99'] * 1e6:.0f} / "
                     f"{relay['idle_max'] * 1e6:.0f} us", ""))  # fmt: skip
        rows.append(("relay round trip during a full snapshot",
                     f"{relay['busy_p50'] * 1e6:.0f} / {relay['busy_p99'] * 1e6:.0f} / "
                     f"{relay['busy_max'] * 1e6:.0f} us "
                     f"({relay['busy_n']:.0f} round trips in {relay['snapshot_s']:.2f} s)",
                     "never held"))  # fmt: skip
    if not args.no_lab:
        cache = Path(tempfile.gettempdir()) / "vhtrace-bench-lab"
        lab = lab_rows(args.runs, cache)
        if isinstance(lab, str):
            rows.append(("real stack", f"skipped: {lab}", ""))
        else:
            direct = statistics.median(lab["direct"])
            for name, values in lab.items():
                median = statistics.median(values)
                goal = "<= 1.10x" if "default" in name else ""
                rows.append((f"boot + I/O, {name}",
                             f"{median:.2f} s ({median / direct:.2f}x), runs "
                             + " ".join(f"{v:.2f}" for v in values), goal))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"| {'what':<{width}} | {'measured':<{value_width}} | goal |")
    print(f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|------|")
    for what, value, goal in rows:
        print(f"| {what:<{width}} | {value:<{value_width}} | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
