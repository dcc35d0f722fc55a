"""A loaded machine for tests and benchmarks: a busy loop per CPU, processes of our own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def busy_loops(count: int | None = None) -> Iterator[int]:
    """``count`` CPU-bound processes (default: one per CPU this process may use), each
    pinned to a CPU of its own in turn, for as long as the block runs; they are killed
    after it. Yields how many run."""
    cpus = sorted(os.sched_getaffinity(0))
    count = len(cpus) if count is None else count
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    for index, loop in enumerate(loops):
        os.sched_setaffinity(loop.pid, {cpus[index % len(cpus)]})
    try:
        time.sleep(0.2)  # they are running
        yield count
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
