"""Sockets of a replay: reaching the peer, and reading whole messages without blocking.

A :class:`Link` is one vhost-user socket of a session (the main connection or the
back-end channel). Reads go through :mod:`vhtrace.wire` and the protocol's framer, so
they never pass the end of a message and fds stay with the message they came with;
after a read the link keeps reading while more is waiting, then hands over every
whole message, which is what lets one event loop serve both channels.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import stat
import time
from pathlib import Path

from vhtrace.protocol.connection import Connection, Received, StrayFds
from vhtrace.protocol.spec import Channel
from vhtrace.wire import close_fds, recv_chunk, send_all


class Link:
    """One framed socket of a session, read through the session's :class:`Connection`."""

    def __init__(self, sock: socket.socket, channel: Channel, connection: Connection) -> None:
        self.sock = sock
        self.channel = channel
        self.connection = connection
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> tuple[list[Received], bool]:
        """Whole messages readable now, analysed, and whether the peer closed its end.

        Call when the socket is readable: the first read does not block."""
        connection, channel = self.connection, self.channel
        received: list[Received] = []
        while True:
            try:
                data, fds, _ = recv_chunk(self.sock, connection.bytes_wanted(channel))
            except (ConnectionResetError, BrokenPipeError):
                data, fds = b"", []
            if not data:
                close_fds(fds)
                truncated = connection.eof(channel)
                if truncated is not None:
                    close_fds(truncated.fds)
                return received, True
            for event in connection.receive_data(data, fds, channel):
                if isinstance(event, StrayFds):
                    close_fds(event.fds)
                else:
                    received.append(event)
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return received, False

    def send(self, raw: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
        """One message in one sendmsg, its fds with its first byte."""
        send_all(self.sock, raw, fds)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()


def connect_unix(path: str | Path, timeout: float) -> socket.socket:
    """Connect to a listening unix socket, retrying while it is not there yet."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            if time.monotonic() >= deadline:
                raise OSError(f"{path}: nothing listens there ({exc.strerror})") from None
            time.sleep(0.02)


def listen_unix(path: str | Path, mode: int = 0o600) -> socket.socket:
    """A listening unix socket at ``path`` (a stale socket file there is replaced)."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(f"{path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()  # stale: nobody listens
        else:
            raise OSError(f"{path}: in use (something listens there)")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(4)
    return sock
