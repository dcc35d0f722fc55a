"""Serving a replayed back-end in a thread, with short timeouts: shared by the replay tests."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from vhtrace.replay import ReplayOptions, ReplayResult, serve_backend

TRACES = Path(__file__).resolve().parents[2] / "traces"

FAST = ReplayOptions(timeout=2.0, connect_timeout=2.0)


class Served:
    """serve_backend in a thread: the replayed back-end, listening once started."""

    def __init__(self, trace: Path, path: Path, options: ReplayOptions) -> None:
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.result: ReplayResult | None = None

        def run() -> None:
            self.result = serve_backend(
                trace, path, options, stop=self.stop, on_ready=lambda _: self.ready.set()
            )
            self.ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def finish(self, timeout: float = 5.0) -> ReplayResult:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(timeout)
        assert self.result is not None
        return self.result


def serve(trace: Path, path: Path, **options) -> Served:
    return Served(trace, path, replace(FAST, timeout=None, **options))
