"""The transport's one policy for socket paths, with real sockets."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from vhtrace import wire


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)
    return sock


def test_is_listening_asks_the_kernel_and_connects_to_nobody(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    live = _listener(path)
    live.setblocking(False)
    try:
        assert wire.is_listening(path)
        with pytest.raises(BlockingIOError):
            live.accept()  # the question reached nobody: no connection to take
    finally:
        live.close()
    assert path.exists() and not wire.is_listening(path)  # stale now


def test_is_listening_is_false_for_what_is_no_socket(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert not wire.is_listening(tmp_path / "file")
    assert not wire.is_listening(tmp_path / "absent.sock")


def test_listen_replaces_a_stale_socket_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    _listener(path).close()
    sock = wire.listen_unix(path)
    try:
        assert wire.is_listening(path)
        assert os.stat(path).st_mode & 0o777 == 0o600
    finally:
        sock.close()


def test_listen_refuses_a_live_socket_and_a_file(tmp_path: Path) -> None:
    live = _listener(tmp_path / "live.sock")
    try:
        with pytest.raises(wire.EndpointError, match="something is already listening there"):
            wire.listen_unix(tmp_path / "live.sock")
    finally:
        live.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(wire.EndpointError, match="exists and is not a socket"):
        wire.listen_unix(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"


def test_a_path_too_long_for_sun_path_is_named(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 120)
    with pytest.raises(wire.EndpointError, match=r"socket path is \d+ bytes; expected at most 107"):
        wire.listen_unix(path)


def test_connect_gives_up_with_the_cause(tmp_path: Path) -> None:
    with pytest.raises(wire.EndpointError, match=r"nothing listens there \(no such socket\)"):
        wire.connect_unix(tmp_path / "absent.sock", timeout=0.05)
    _listener(tmp_path / "stale.sock").close()
    with pytest.raises(wire.EndpointError, match=r"\(connection refused\)"):
        wire.connect_unix(tmp_path / "stale.sock", timeout=0.05)


def test_connect_waits_for_a_listener(tmp_path: Path) -> None:
    path = tmp_path / "later.sock"
    live = _listener(path)
    try:
        sock = wire.connect_unix(path, timeout=1)
        sock.close()
    finally:
        live.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_peek_sees_bytes_without_fds_and_leaves_them_queued() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        assert wire.peek_fd_free(ours, 1024) == b"", "nothing waiting"
        theirs.send(b"first")
        theirs.send(b"second")
        assert wire.peek_fd_free(ours, 1024) == b"firstsecond"
        assert wire.peek_fd_free(ours, 3) == b"fir", "no more than asked"
        assert ours.recv(1024) == b"firstsecond", "a peek takes nothing"
    finally:
        ours.close()
        theirs.close()


def test_a_peek_that_meets_fds_gives_nothing_and_leaks_no_copy() -> None:
    ours, theirs = socket.socketpair()
    kick = os.eventfd(0)
    try:
        theirs.send(b"plain")
        wire.send_all(theirs, b"with-fd", [kick])
        before = _open_fds()
        assert wire.peek_fd_free(ours, 1024) == b"", "the fds belong to some of those bytes"
        assert _open_fds() == before, "the peek's copies of the fds are closed"
        chunk = wire.recv_chunk(ours, 5)
        assert (chunk.data, chunk.fds) == (b"plain", [])
        chunk = wire.recv_chunk(ours, 1024)
        assert chunk.data == b"with-fd" and len(chunk.fds) == 1, "the fd stays on its bytes"
        wire.close_fds(chunk.fds)
    finally:
        os.close(kick)
        ours.close()
        theirs.close()


def test_take_peeked_takes_exactly_what_was_seen() -> None:
    ours, theirs = socket.socketpair()
    try:
        theirs.send(b"whole-message|cut-mess")
        seen = wire.peek_fd_free(ours, 1024)
        scratch = bytearray(64)
        assert wire.take_peeked(ours, seen.index(b"|") + 1, scratch) == 14
        assert bytes(scratch[:14]) == b"whole-message|"
        assert ours.recv(1024) == b"cut-mess", "the rest stays on the socket"
    finally:
        ours.close()
        theirs.close()
