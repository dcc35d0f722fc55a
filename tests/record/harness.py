"""An in-process recording proxy between a fake front-end and a fake back-end.

The fakes are plain sockets driven by the test; the proxy and its recorder are the
real ones, running in a thread, so that a test can count the proxy's open fds.
"""

from __future__ import annotations

import os
import socket
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
                 host: Host = "thread") -> None:  # fmt: skip
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
        # Records go to the recorder at once (no batching delay): tests look at its state
        # as soon as the relay has forwarded a message.
        self.recorder = RecorderLink(Recorder(self.writer, snapshots=snapshots), host,
                                     send_delay=0.0)  # fmt: skip
        config = ProxyConfig(
            self.front_path,
            self.back_path,
            Side.BACKEND if backend_connects else Side.FRONTEND,
            strict=strict,
            once=once,
            connect_timeout=5,
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
