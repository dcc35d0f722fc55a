"""Sockets that carry vhost-user: read chunks with their fds, send whole messages.

The only module that calls recvmsg/sendmsg for the protocol, shared by the
recorder, the mock back-end and replay. Reads never go past the end of the
current message (the framer says how many bytes it wants), so the fds the
kernel hands out with a read belong to exactly one message.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
from typing import NamedTuple

from vhtrace.protocol.framing import Frame, Framer, Incomplete, OversizedData
from vhtrace.protocol.spec import SCM_MAX_FD

MAX_FDS_PER_READ = SCM_MAX_FD
"""SCM_MAX_FD: the most fds the kernel passes in one message."""
_FD_SIZE = array.array("i").itemsize
_CMSG_SPACE = socket.CMSG_SPACE(MAX_FDS_PER_READ * _FD_SIZE)
_CMSG_CLOEXEC, _CTRUNC = int(socket.MSG_CMSG_CLOEXEC), int(socket.MSG_CTRUNC)
_SOL_SOCKET, _SCM_RIGHTS = int(socket.SOL_SOCKET), int(socket.SCM_RIGHTS)
"""Plain ints: the socket module's flag enums cost a microsecond per operation."""
READ_LIMIT = 1 << 16


class Chunk(NamedTuple):
    """What one recvmsg returned."""

    data: bytes
    """b'' means the peer closed its end."""
    fds: list[int]
    """Received fds, now owned by the caller (returned even with no data, so none leaks)."""
    fds_truncated: bool = False
    """The kernel dropped fds that did not fit (MSG_CTRUNC): more than 253 were sent."""


def recv_chunk(sock: socket.socket, size: int) -> Chunk:
    """One recvmsg of at most ``size`` bytes, with the fds that came with it."""
    data, ancdata, msg_flags, _ = sock.recvmsg(min(size, READ_LIMIT), _CMSG_SPACE, _CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            usable = len(payload) - len(payload) % _FD_SIZE
            fds.extend(array.array("i", payload[:usable]))
    return Chunk(data, fds, bool(msg_flags & _CTRUNC))


def send_all(sock: socket.socket, data: bytes, fds: tuple[int, ...] | list[int] = ()) -> None:
    """Send bytes with fds attached to the first sendmsg (the one with the first byte)."""
    view = memoryview(data)
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sent = sock.sendmsg([view], ancillary)
    while sent < len(view):
        view = view[sent:]
        sent = sock.sendmsg([view])


def send_frame(sock: socket.socket, frame: Frame) -> None:
    """Send a message in one sendmsg: header, payload and fds together.

    Some back-ends read the payload with a single read() and assert that it
    came whole (libvhost-user), so a message is never split by us."""
    send_all(sock, frame.raw, frame.fds)


def close_fds(fds: tuple[int, ...] | list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class MessageReader:
    """Blocking reader of whole frames from a socket (mock back-end, replay)."""

    def __init__(self, sock: socket.socket, max_payload: int | None = None) -> None:
        self.sock = sock
        self.framer = Framer() if max_payload is None else Framer(max_payload)
        self.leftover: Incomplete | None = None

    def read(self) -> Frame | None:
        """The next complete frame, or None at end of stream (see ``leftover``).

        Oversized messages come back as frames with ``oversized`` set, their
        payload cut to the framer's maximum."""
        while True:
            event = self.framer.next_event()
            if isinstance(event, Frame):
                return event
            if isinstance(event, OversizedData):
                close_fds(event.fds)  # fds arriving inside an oversized payload: unowned
                continue
            if event is not None:
                continue  # the oversized header: its fds come back with the final Frame
            data, fds, _ = recv_chunk(self.sock, self.framer.bytes_wanted())
            if not data:
                close_fds(fds)
                self.leftover = self.framer.eof()
                return None
            self.framer.feed(data, fds)
