"""Serving: the mock on a listening socket."""

from __future__ import annotations

import os
import socket
import threading

from mockbackend import BlkDevice, Script
from vhtrace import wire
from vhtrace.protocol.messages import build


def test_mock_backend_serves_a_listening_socket(tmp_path, image) -> None:
    from mockbackend import MockBackend

    path = tmp_path / "mock.sock"
    backend = MockBackend(Script(BlkDevice(image))).start(path, sessions=2)
    assert os.stat(path).st_mode & 0o777 == 0o600
    for _ in range(2):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(path))
        wire.send_frame(sock, build("GET_FEATURES"))
        frame = wire.MessageReader(sock).read()
        assert frame is not None and frame.request == 1
        sock.close()
    reports = backend.wait(10)
    assert len(reports) == 2 and not threading.current_thread().daemon
