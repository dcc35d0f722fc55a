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
