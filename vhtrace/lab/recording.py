"""``vhtrace record`` as a lab process: the proxy under test between QEMU and a back-end."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Self

from vhtrace.lab.proc import (
    LabError,
    LabProcess,
    ProcessView,
    check_socket_path,
    remove_stale_socket,
)


class RecordingProxy(ProcessView):
    """A running ``vhtrace record``; ``stop()`` ends it with SIGINT, as a user would."""

    def __init__(self, frontend: Path, backend: Path, trace: Path, log_path: Path, *,
                 backend_connects: bool = False, extra_args: tuple[str, ...] = (),
                 name: str = "vhtrace-record") -> None:  # fmt: skip
        self.frontend = check_socket_path(frontend)
        self.backend = check_socket_path(backend)
        self.trace = Path(trace)
        self.backend_connects = backend_connects
        if backend_connects:
            where = ["--connect-frontend", str(frontend), "--listen-backend", str(backend)]
        else:
            where = ["--listen", str(frontend), "--connect", str(backend)]
        argv = [sys.executable, "-m", "vhtrace.cli.main", "record", *where, "-w", str(trace),
                *extra_args]  # fmt: skip
        self._proc = LabProcess(argv, log_path, name=name)

    @property
    def listen_path(self) -> Path:
        return self.backend if self.backend_connects else self.frontend

    def start(self, timeout: float = 15.0) -> Self:
        remove_stale_socket(self.listen_path)
        self.process.start()
        self.process.wait_listening(self.listen_path, timeout)
        return self

    @property
    def process(self) -> LabProcess:
        return self._proc

    def wait(self, timeout: float) -> int:
        """Wait for the recorder to exit on its own (``--once``)."""
        return self.process.wait_exit(timeout)

    def interrupt(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Send a signal (SIGINT by default) and wait for the clean exit."""
        if self.process.proc is None:
            raise LabError("recorder not started")
        self.process.proc.send_signal(sig)
        return self.process.wait_exit(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process.proc is not None and self.process.alive():
            try:
                return self.interrupt(timeout=timeout)
            except LabError:
                pass
        return self.process.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
