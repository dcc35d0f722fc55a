"""Sockets of a replay: reaching the peer, and reading whole messages without blocking.

A :class:`Link` is one vhost-user socket of a session (the main connection or the
back-end channel). Reads go through :mod:`vhtrace.wire` and the protocol's framer, so
they never pass the end of a message and fds stay with the message they came with;
after a read the link keeps reading while more is waiting, then hands over every
whole message, which is what lets one event loop serve both channels.
"""

from __future__ import annotations

import contextlib
import select
import socket

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
