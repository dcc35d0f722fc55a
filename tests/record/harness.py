"""A recording proxy between a fake front-end and a fake back-end, two ways.

The fakes are plain sockets driven by the test. :class:`ProxyHarness` runs the real
proxy and recorder in this process (a test can count the proxy's open fds);
:class:`Recording` runs ``vhtrace record`` as a user does, in a process of its own.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from vhtrace.memory.recording import SnapshotConfig
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Side
from vhtrace.record.link import Host, RecorderLink
from vhtrace.record.recorder import Recorder
from vhtrace.record.relay import Proxy, ProxyConfig
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import Record
from vhtrace.trace.writer import TraceWriter, make_header
from vhtrace.wire import MessageReader, send_all


class Peer:
    """One fake side: a socket, a message reader on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(5)
        self.reader = MessageReader(sock)

    def send(self, frame: Frame) -> None:
        send_all(self.sock, frame.raw, frame.fds)

    def send_raw(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        send_all(self.sock, data, fds)

    def read(self) -> Frame:
        frame = self.reader.read()
        assert frame is not None, "the proxy closed the connection"
        return frame

    def read_bytes(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def closed_by_peer(self, timeout: float = 5) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (TimeoutError, BlockingIOError):
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


class ProxyHarness:
    """Proxy in this process, listening for the front-end (topology A); its recorder in a
    thread of this process (so tests can look at it) or, with ``host="process"``, in its
    own process as ``vhtrace record`` has it. Either way over the same socket."""

    def __init__(self, directory: Path, *, strict: bool = False, once: bool = False,
                 backend_connects: bool = False, snapshots: SnapshotConfig | None = None,
                 host: Host = "thread", send_delay: float = 0.0,
                 priority: str = "idle", busy_poll: float = 0.0) -> None:  # fmt: skip
        self.directory = directory
        self.front_path = str(directory / "front.sock")
        self.back_path = str(directory / "back.sock")
        self.trace_path = directory / "trace.vht"
        self.backend_connects = backend_connects
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.back_path if not backend_connects else self.front_path)
        self.server.listen(8)
        self.server.settimeout(5)
        self.writer = TraceWriter(str(self.trace_path), make_header())
        # Records go to the recorder at once unless asked (no batching delay): tests look
        # at its state as soon as the relay has forwarded a message.
        self.recorder = RecorderLink(Recorder(self.writer, snapshots=snapshots), host,
                                     send_delay=send_delay, priority=priority)  # fmt: skip
        config = ProxyConfig(
            self.front_path,
            self.back_path,
            Side.BACKEND if backend_connects else Side.FRONTEND,
            strict=strict,
            once=once,
            connect_timeout=5,
            # no polling unless asked: the relay shares this process's GIL with the peers
            busy_poll=busy_poll,
        )
        if snapshots is not None:
            config.hold, config.hold_seconds = snapshots.triggers, snapshots.hold_seconds
        self.proxy = Proxy(config, self.recorder)
        self.recorder.start()
        self.thread = threading.Thread(target=self.proxy.run, daemon=True)
        self.thread.start()
        self.stopped = False

    def connect(self) -> tuple[Peer, Peer]:
        """A new session: (front-end, back-end)."""
        if self.backend_connects:
            be = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            be.connect(self.back_path)
            fe, _ = self.server.accept()
        else:
            fe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            fe.connect(self.front_path)
            be, _ = self.server.accept()
        return Peer(fe), Peer(be)

    def wait_sessions_ended(self, count: int, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while self.proxy.finished_sessions < count:
            assert time.monotonic() < deadline, (
                f"{self.proxy.finished_sessions} sessions ended, expected {count}"
            )
            time.sleep(0.005)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.proxy.request_stop()
        self.thread.join(10)
        self.recorder.stop(timeout=10)
        self.server.close()

    def records(self) -> tuple[list[Record], str | None]:
        self.stop()
        with TraceReader(self.trace_path) as reader:
            return list(reader), reader.problem


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class Recording:
    """A real ``vhtrace record --listen F --connect B`` process and a fake back-end."""

    def __init__(self, tmp_path: Path, *extra: str, umask: int | None = None,
                 trace: Path | None = None, fd_limit: int | None = None) -> None:  # fmt: skip
        self.front = str(tmp_path / "f.sock")
        self.back = str(tmp_path / "b.sock")
        self.trace = trace if trace is not None else tmp_path / "t.vht"
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.back)
        self.server.listen()
        self.server.settimeout(5)
        argv = [sys.executable, "-m", "vhtrace.cli.main", "record", "--listen", self.front,
                "--connect", self.back, "-w", str(self.trace), *extra]  # fmt: skip

        def preexec() -> None:
            if umask is not None:
                os.umask(umask)
            if fd_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=preexec)  # fmt: skip
        _STARTED.append(self.proc)
        deadline = time.monotonic() + 10
        # The trace is created once the socket is up: wait for both.
        while not (os.path.exists(self.front) and (str(self.trace) == "-" or self.trace.exists())):
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def session(self) -> tuple[Peer, Peer]:
        fe = socket.socket(socket.AF_UNIX)
        fe.connect(self.front)
        be, _ = self.server.accept()
        return Peer(fe), Peer(be)

    def finish(self, sig: int = signal.SIGINT) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=15)
        self.server.close()
        self.out = out
        return self.proc.returncode, out.decode(errors="replace"), err.decode()


_STARTED: list[subprocess.Popen[bytes]] = []


def stop_leftover_recorders() -> None:
    """Kill the ``vhtrace record`` processes a failed test left running (its group:
    the relay and its recorder), so that they do not outlive the test run."""
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
