"""The back-end under test: a program the fuzzer starts, watches and restarts.

``--backend-cmd`` is a command line with ``{sock}`` where the socket path goes; the
fuzzer makes the path in a private directory, starts the program in its own process
group with stdout and stderr in a log file (which the panic oracle reads, from where
the previous iteration left off), and waits until it listens. Only this process is
ever a target: it is restarted once it died (or hung), and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from vhtrace.lab.proc import is_listening

SOCK = "{sock}"


class TargetError(Exception):
    """The back-end command is unusable, or the program did not come up (exit code 2)."""


def parse_command(command: str) -> list[str]:
    """argv of ``--backend-cmd``; TargetError unless it has ``{sock}``."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise TargetError(f"--backend-cmd: {exc}") from None
    if not argv:
        raise TargetError("--backend-cmd is empty")
    if not any(SOCK in arg for arg in argv):
        raise TargetError(f"--backend-cmd must say where the socket goes with {SOCK}: {command!r}")
    return argv


class Target:
    """One back-end program at a time, at a fixed socket path."""

    def __init__(self, argv: list[str], workdir: Path | None = None, start_timeout: float = 15.0):
        self.template = argv
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="vhtrace-fuzz-"))
        os.chmod(self.dir, 0o700)
        self.socket = self.dir / "backend.sock"
        self.log_path = self.dir / "backend.log"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0
        self.argv = [arg.replace(SOCK, str(self.socket)) for arg in argv]

    # -- life ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the back-end and wait until it listens on its socket."""
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.launch()
        deadline = time.monotonic() + self.start_timeout
        while not is_listening(self.socket):
            if self.proc is not None and self.proc.poll() is not None:
                raise TargetError(
                    f"{self.argv[0]} exited (status {self.proc.returncode}) before listening on "
                    f"{self.socket}; its output:\n{self.read_log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TargetError(
                    f"{self.argv[0]} did not listen on {self.socket} within "
                    f"{self.start_timeout:g} s; its output:\n{self.read_log_tail()}"
                )
            time.sleep(0.005)

    def launch(self) -> None:
        """Start the program without waiting (a front-end connects to us by itself)."""
        with open(self.log_path, "ab") as log:
            log.write(
                f"# vhtrace fuzz: start {self.starts + 1}: {shlex.join(self.argv)}\n".encode()
            )
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            except OSError as exc:
                raise TargetError(f"cannot start {self.argv[0]}: {exc.strerror or exc}") from None
        self.starts += 1
        self._log_offset = self.log_path.stat().st_size

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The exit status (negative: killed by that signal), waiting up to ``wait`` s."""
        if self.proc is None:
            return None
        if wait > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        return self.proc.poll()

    def ensure_running(self) -> bool:
        """Start the program if it is not running; True if it had to be (re)started."""
        if self.alive():
            return False
        self.reap()
        self.start()
        return True

    def restart(self) -> None:
        self.stop()
        self.start()

    def reap(self) -> None:
        """Kill what is left of the process group of a program that died (its children)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, grace: float = 2.0) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        self.reap()

    def close(self) -> None:
        """Stop the program and remove what the fuzzer made for it (socket, log, directory)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()

    # -- output -------------------------------------------------------------------------

    def new_output(self, limit: int = 1 << 16) -> str:
        """What the program wrote since the last call (bounded)."""
        try:
            size = self.log_path.stat().st_size
        except OSError:
            return ""
        if size <= self._log_offset:
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(max(self._log_offset, size - limit))
            data = log.read(limit)
        self._log_offset = size
        return data.decode(errors="replace")

    def read_log_tail(self, limit: int = 4096) -> str:
        try:
            data = self.log_path.read_bytes()[-limit:]
        except OSError:
            return ""
        return data.decode(errors="replace")


def templated(argv: list[str], socket: str | os.PathLike[str]) -> str:
    """A ready command line (the lab's, say) as ``--backend-cmd``: its socket path -> {sock}."""
    path = os.fspath(socket)
    if not any(path in arg for arg in argv):
        raise TargetError(f"the command does not mention its socket {path}")
    return shlex.join(arg.replace(path, SOCK) for arg in argv)
