"""Shared plumbing for lab processes: process groups, logs, and waiting for unix sockets.

Every lab program (QEMU, qemu-storage-daemon, virtiofsd) runs in its own session so that
cleanup can kill the whole process group, writes stdout+stderr to one log file so that a
failure message can quote it, and is considered ready only once its socket is *listening*
(a socket file alone may be stale, or bound but not yet listening).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from vhtrace.wire import SUN_PATH_MAX as MAX_SOCKET_PATH
from vhtrace.wire import is_listening


class LabError(RuntimeError):
    """A lab process failed, timed out or never became ready; the message quotes its log."""


def check_socket_path(path: Path) -> Path:
    """Absolute form of a socket path, refusing those that do not fit in sun_path."""
    path = Path(os.path.abspath(path))
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"unix socket path is {len(os.fsencode(path))} bytes, more than {MAX_SOCKET_PATH}: "
            f"{path} (use a short directory under /tmp)"
        )
    return path


def remove_stale_socket(path: Path) -> None:
    """Unlink a leftover socket file nobody listens on, so readiness checks are honest."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(mode) and not is_listening(path):
        os.unlink(path)


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of text, runs of identical lines folded into one.

    Folding keeps an error message useful when a program repeats one line in a loop.
    """
    folded: list[str] = []
    repeat = 0
    for line in text.splitlines():
        if folded and line == folded[-1]:
            repeat += 1
            continue
        if repeat:
            folded.append(f"[previous line repeated {repeat} more times]")
            repeat = 0
        folded.append(line)
    if repeat:
        folded.append(f"[previous line repeated {repeat} more times]")
    return "\n".join(folded[-lines:])


def read_log(path: Path, limit: int = 4 << 20) -> str:
    """The last ``limit`` bytes of a log file as text ('' if it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


class RepeatFolder(threading.Thread):
    """Copy a pipe into a log file, folding runs of identical lines into a count.

    QEMU 7.2 on a postcopy destination prints the same error line in a tight loop, tens of
    MB per second; folding keeps the log small and its tail readable.
    """

    NOTE_EVERY = 100_000

    def __init__(self, fd: int, log_path: Path) -> None:
        super().__init__(name=f"fold:{log_path.name}", daemon=True)
        self._fd = fd
        self._log_path = log_path

    @staticmethod
    def _note(count: int) -> bytes:
        return f"[vhtrace.lab: previous line repeated {count} more times]\n".encode()

    def run(self) -> None:
        previous: bytes | None = None
        repeat = 0
        pending = b""
        with open(self._log_path, "ab", buffering=0) as out:
            while True:
                try:
                    chunk = os.read(self._fd, 1 << 16)
                except OSError:
                    chunk = b""
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop() if chunk else b""
                if not chunk and lines == [b""]:
                    lines = []
                batch: list[bytes] = []
                for line in lines:
                    if line == previous:
                        repeat += 1
                        if repeat >= self.NOTE_EVERY:
                            batch.append(self._note(repeat))
                            repeat = 0
                        continue
                    if repeat:
                        batch.append(self._note(repeat))
                        repeat = 0
                    batch.append(line + b"\n")
                    previous = line
                if not chunk and repeat:
                    batch.append(self._note(repeat))
                if batch:
                    out.write(b"".join(batch))
                if not chunk:
                    break
        os.close(self._fd)


class ProcessView:
    """What every lab program (QEMU, a back-end, the recorder) tells about its process:
    the wrapper keeps its :class:`LabProcess` in ``_proc``."""

    _proc: LabProcess

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (then SIGKILL) the program's process group; its exit status."""
        return self._proc.stop(timeout)

    def __enter__(self) -> Self:
        """Started if not yet; stopped at the end of the block."""
        if self._proc.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """Process id once started."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once the program ended, else None."""
        return self._proc.returncode

    def alive(self) -> bool:
        """True while the program runs."""
        return self._proc.alive()

    def log_text(self) -> str:
        """What the program printed so far (QEMU: its serial console too)."""
        return self._proc.log_text()

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once it contains ``text``; LabError quoting the log if it never does.

        stderr reaches the log through a thread, so a line the program has printed may
        land a moment after the event that made it print it.
        """
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if text in log:
                return log
            if time.monotonic() >= deadline:
                raise LabError(
                    self._proc.describe_failure(f"{text!r} not in its log after {timeout:g} s")
                )
            time.sleep(0.05)


class LabProcess:
    """A program started in its own process group with its output in a log file.

    stdout (QEMU's serial console) goes straight to the log; stderr passes through a
    :class:`RepeatFolder` into the same log, or with ``fold_stderr=False`` straight too:
    for a program whose prompt is looked for in the log (testpmd), a stderr line copied
    late by the folder could land inside the prompt.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        stdin_pipe: bool = False,
        fold_stderr: bool = True,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.fold_stderr = fold_stderr
        self.log_path = Path(log_path)
        self.name = name
        self.env = dict(env) if env is not None else None
        self.stdin_pipe = stdin_pipe
        self.proc: subprocess.Popen[bytes] | None = None
        self._folder: RepeatFolder | None = None

    def start(self) -> None:
        """Launch the program; stdout and stderr go to the log.

        stdin is /dev/null, or a pipe :meth:`send` writes to (an interactive program)."""
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        read_end, write_end = os.pipe() if self.fold_stderr else (-1, -1)
        try:
            with open(self.log_path, "ab") as log:
                log.write(f"# {self.name}: {' '.join(self.argv)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL,
                    stdout=log,
                    stderr=write_end if self.fold_stderr else subprocess.STDOUT,
                    start_new_session=True,
                    env=self.env,
                )
        except BaseException:
            if self.fold_stderr:
                os.close(read_end)
            raise
        finally:
            if self.fold_stderr:
                os.close(write_end)
        if not self.fold_stderr:
            return
        self._folder = RepeatFolder(read_end, self.log_path)
        self._folder.start()

    def send(self, text: str) -> None:
        """Write ``text`` to the program's stdin (started with ``stdin_pipe``)."""
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError(f"{self.name} has no stdin pipe")
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise LabError(self.describe_failure(f"stdin closed before {text.strip()!r}")) from None

    def _drain(self, timeout: float = 2.0) -> None:
        """Let the stderr copier finish after the program ended, so the log is complete."""
        if self._folder is not None:
            self._folder.join(timeout)

    @property
    def pid(self) -> int | None:
        """Process id, once started."""
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        """Exit status once the program has ended, else None."""
        return self.proc.poll() if self.proc else None

    def alive(self) -> bool:
        """True while the program runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """Everything the program printed so far (the tail of very large logs)."""
        return read_log(self.log_path)

    def describe_failure(self, what: str, lines: int = 40) -> str:
        """An error message: what went wrong, the exit status and the end of the log."""
        rc = self.returncode
        state = "still running" if rc is None else f"exit status {rc}"
        return (
            f"{self.name}: {what} ({state}); command: {' '.join(self.argv)}\n"
            f"--- last {lines} lines of {self.log_path} ---\n"
            f"{tail(read_log(self.log_path, 1 << 20), lines)}"
        )

    def wait_exit(self, timeout: float) -> int:
        """Wait for the program to end; LabError quoting the log on timeout."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise LabError(self.describe_failure(f"did not exit within {timeout:g} s")) from None
        self._drain()
        return rc

    def wait_listening(self, socket_path: Path, timeout: float) -> None:
        """Wait until the program listens on ``socket_path``; LabError if it dies or times out."""
        deadline = time.monotonic() + timeout
        while not is_listening(socket_path):
            if not self.alive():
                raise LabError(self.describe_failure(f"exited before listening on {socket_path}"))
            if time.monotonic() > deadline:
                raise LabError(
                    self.describe_failure(f"not listening on {socket_path} after {timeout:g} s")
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            _killpg(self.proc.pid, sig)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        # The leader may be gone while children it forked still hold the group.
        _killpg(self.proc.pid, signal.SIGKILL)
        self._drain()
        return self.proc.poll()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until true (returns True) or ``timeout`` passes (returns False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
