"""Sockets that carry vhost-user: endpoints, reads with their fds, whole messages sent.

The transport of every shell (recorder, replay, mock back-end, fuzz): the only module
that calls recvmsg/sendmsg for the protocol, and the one policy for socket paths
(:func:`listen_unix`, :func:`connect_unix`). Reads never go past the end of the current
message (the framer says how many bytes it wants), so the fds the kernel hands out
with a read belong to exactly one message.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import socket
import stat
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from vhtrace.protocol.connection import Connection, Received, StrayFds, Truncated
from vhtrace.protocol.framing import Frame, Framer, Incomplete, OversizedData
from vhtrace.protocol.spec import SCM_MAX_FD, Channel

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


_PEEK = int(socket.MSG_PEEK) | _CMSG_CLOEXEC


def peek_fd_free(sock: socket.socket, limit: int) -> bytes:
    """The bytes waiting (up to ``limit``) if none of them carries fds, else b''.

    A peek stops after the first chunk that carries fds (the kernel's rule; it hands out
    copies of them, closed here): if it brings none, none of what it saw has any, so
    reading those bytes later keeps every fd on its message. b'' also when nothing is
    waiting or the peer closed: a read says which."""
    try:
        data, ancdata, msg_flags, _ = sock.recvmsg(limit, _CMSG_SPACE, _PEEK)
    except OSError:
        return b""
    if not ancdata and not msg_flags & _CTRUNC:
        return data
    for level, kind, payload in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            close_fds(array.array("i", payload[: len(payload) - len(payload) % _FD_SIZE]))
    return b""


def take_peeked(sock: socket.socket, size: int, scratch: bytearray) -> int:
    """Take ``size`` bytes a peek saw off the socket (into ``scratch``, at least that big),
    how many were taken. Apart from the peek because taking them wakes their sender's
    side in the kernel (its socket has room again): a relay does it after it sent them on.
    """
    view = memoryview(scratch)
    taken = 0
    while taken < size:
        got = sock.recv_into(view[taken:size], size - taken)
        if not got:
            break
        taken += got
    return taken


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
    """Blocking reader of whole frames from a socket, unanalysed (tests and tools that
    look at the bytes; the shells read through :class:`ConnectionReader`)."""

    def __init__(self, sock: socket.socket, max_payload: int | None = None) -> None:
        self.sock = sock
        self.framer = Framer() if max_payload is None else Framer(max_payload)
        self.leftover: Incomplete | None = None

    def read(self) -> Frame | None:
        """The next complete frame, or None at end of stream (see ``leftover``).

        Oversized messages come back as frames with ``oversized`` set, their payload
        cut to the framer's maximum; fds inside an oversized payload are closed."""
        while True:
            event = self.framer.next_event()
            if isinstance(event, Frame):
                return event
            if isinstance(event, OversizedData):
                close_fds(event.fds)
                continue
            if event is not None:
                continue  # the oversized header: its fds come back with the final Frame
            data, fds, _ = recv_chunk(self.sock, self.framer.bytes_wanted())
            if not data:
                close_fds(fds)
                self.leftover = self.framer.eof()
                return None
            self.framer.feed(data, fds)


class ConnectionReader:
    """Blocking reads of whole messages on one channel of a :class:`Connection`
    (the mock back-end's sockets): each comes analysed, with its fds."""

    def __init__(
        self,
        sock: socket.socket,
        connection: Connection,
        channel: Channel = Channel.MAIN,
        lock: contextlib.AbstractContextManager[object] | None = None,
    ) -> None:
        self.sock = sock
        self.connection = connection
        self.channel = channel
        self._lock = lock or contextlib.nullcontext()
        """Held while the connection analyses (other threads share it)."""
        self._ready: deque[Received] = deque()
        self.truncated: Truncated | None = None
        """What was left of a message when the stream ended (its fds already closed)."""
        self.fds_dropped = False
        """The kernel dropped fds that did not fit one read (more than 253 were sent)."""

    def read(self) -> Received | None:
        """The next whole message, or None at the end of the stream.

        Oversized messages come with their payload cut to the framer's maximum; fds
        that arrived inside an oversized payload belong to nobody and are closed."""
        while not self._ready:
            chunk = recv_chunk(self.sock, self.connection.bytes_wanted(self.channel))
            self.fds_dropped |= chunk.fds_truncated
            if not chunk.data:
                close_fds(chunk.fds)
                with self._lock:
                    self.truncated = self.connection.eof(self.channel)
                if self.truncated is not None:
                    close_fds(self.truncated.fds)
                return None
            with self._lock:
                events = self.connection.receive_data(chunk.data, chunk.fds, self.channel)
            for event in events:
                if isinstance(event, StrayFds):
                    close_fds(event.fds)
                else:
                    self._ready.append(event)
        return self._ready.popleft()


# -- endpoints: one policy for socket paths, in every shell --------------------------------

SUN_PATH_MAX = 107
"""The longest unix socket path in bytes: sun_path holds 108, the last one a NUL."""
RETRY_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN})
"""connect() errors that mean 'nobody listens there yet'."""


class EndpointError(OSError):
    """A socket path that cannot be used (too long, in use, not a socket, no permission)."""


def check_path_length(path: str | os.PathLike[str], what: str = "") -> None:
    """Raise EndpointError for a path too long for sun_path (the kernel would refuse it)."""
    length = len(os.fsencode(path))
    if length > SUN_PATH_MAX:
        where = f"{what} " if what else ""
        raise EndpointError(
            f"{where}{os.fspath(path)}: socket path is {length} bytes; expected at most "
            f"{SUN_PATH_MAX} (the size of sun_path); use a shorter or relative path"
        )


def is_listening(path: str | os.PathLike[str]) -> bool:
    """True if a process listens on the unix socket file at ``path``.

    Asked of the kernel (sock_diag: listening unix sockets by the inode of their file),
    so nobody is connected to: a probe by connect() would reach the listener as a
    connection, which a recorder or a back-end takes for a session."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        return False
    try:
        listening = _listening_socket_files()
    except OSError:  # no sock_diag here: fall back to the connect() probe
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            return False
        finally:
            probe.close()
        return True
    kernel_dev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)
    return (kernel_dev, st.st_ino) in listening


_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLM_F_DUMP_REQUEST = 4, 20, 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN, _UDIAG_SHOW_VFS, _UNIX_DIAG_VFS = 10, 0x2, 1
_NLMSG_HEADER = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")


def _listening_socket_files() -> set[tuple[int, int]]:
    """(kernel dev, inode) of the socket file of every listening unix socket."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        request = _UNIX_DIAG_REQ.pack(
            socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, 0, _UDIAG_SHOW_VFS, 0xFFFFFFFF, 0xFFFFFFFF
        )
        size = _NLMSG_HEADER.size + len(request)
        nl.sendto(_NLMSG_HEADER.pack(size, _SOCK_DIAG_BY_FAMILY, _NLM_F_DUMP_REQUEST, 1, 0)
                  + request, (0, 0))  # fmt: skip
        found: set[tuple[int, int]] = set()
        while True:
            data = nl.recv(1 << 16)
            offset = 0
            while offset + _NLMSG_HEADER.size <= len(data):
                length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR or length < _NLMSG_HEADER.size:
                    raise OSError("sock_diag refused the request")
                body = data[offset + _NLMSG_HEADER.size : offset + length]
                attr = 16  # struct unix_diag_msg
                while attr + 4 <= len(body):
                    attr_len, attr_type = struct.unpack_from("=HH", body, attr)
                    if attr_len < 4:
                        break
                    if attr_type == _UNIX_DIAG_VFS and attr_len >= 12:
                        inode, dev = struct.unpack_from("=II", body, attr + 4)
                        found.add((dev, inode))
                    attr += (attr_len + 3) & ~3
                offset += (length + 3) & ~3
            if not data:
                return found


def listen_unix(
    path: str | os.PathLike[str], mode: int = 0o600, backlog: int = 16
) -> socket.socket:
    """A listening unix socket at ``path``, created with ``mode`` (default 0600: no window
    where it is open to others).

    The one stale-socket policy: a socket file nobody listens on is replaced; one that
    a process listens on, or a file that is not a socket, is an EndpointError."""
    check_path_length(path)
    name = os.fspath(path)
    if os.path.lexists(name):
        if not stat.S_ISSOCK(os.lstat(name).st_mode):
            raise EndpointError(f"{name}: exists and is not a socket")
        if is_listening(name):
            raise EndpointError(f"{name}: something is already listening there")
        os.unlink(name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        sock.bind(name)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"{name}: cannot listen: {exc.strerror or exc}") from exc
    finally:
        os.umask(old_umask)
    if mode != 0o600:
        os.chmod(name, mode)
    sock.listen(backlog)
    return sock


def try_connect(path: str | os.PathLike[str]) -> socket.socket | None:
    """Connect now, or None if nobody listens yet (retry later); other errors raise."""
    check_path_length(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(os.fspath(path))
    except OSError as exc:
        sock.close()
        if exc.errno in RETRY_ERRNOS:
            return None
        raise EndpointError(f"{os.fspath(path)}: cannot connect: {exc.strerror or exc}") from exc
    return sock


def connect_unix(
    path: str | os.PathLike[str],
    timeout: float,
    stop: Callable[[], bool] | None = None,
    interval: float = 0.02,
) -> socket.socket:
    """Connect, retrying while nobody listens there yet, for ``timeout`` seconds (or
    until ``stop()``); EndpointError naming the cause after that."""
    deadline = time.monotonic() + timeout
    while True:
        sock = try_connect(path)
        if sock is not None:
            return sock
        if time.monotonic() >= deadline or (stop is not None and stop()):
            cause = "no such socket" if not os.path.lexists(path) else "connection refused"
            raise EndpointError(
                f"{os.fspath(path)}: nothing listens there ({cause}) after {timeout:g} s"
            )
        time.sleep(interval)
