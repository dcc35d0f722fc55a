"""Serving a trace's back-end side: stopped before anyone comes, a socket in use,
connecting to a listening front-end."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from tests.replay.builders import conversation, write_trace
from tests.replay.serving import FAST, serve
from vhtrace.protocol.spec import Side
from vhtrace.replay import ReplayResult, serve_backend
from vhtrace.wire import listen_unix


def test_serving_can_be_stopped_before_anyone_comes(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    served = serve(trace, where / "be.sock")
    served.stop.set()
    result = served.finish()
    assert result.exit_code == 2 and "stopped before a front-end came" in (result.error or "")
    assert not (where / "be.sock").exists()


def test_serving_a_socket_in_use_is_unusable(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(str(where / "busy.sock"))
    busy.listen(1)
    result = serve_backend(trace, where / "busy.sock", FAST)
    busy.close()
    assert result.exit_code == 2
    assert (
        result.error
        == f"cannot listen: {where / 'busy.sock'}: something is already listening there"
    )


def test_serve_connect_reaches_a_listening_front_end(tmp_path: Path, where: Path) -> None:
    """--serve-connect: the front-end listens (QEMU server=on) and the replay connects."""
    from vhtrace.replay.fds import FdFactory
    from vhtrace.replay.options import load
    from vhtrace.replay.player import Player
    from vhtrace.replay.session import LoopOptions, SessionRunner

    trace = write_trace(tmp_path / "t.vht", [conversation()])
    listener = listen_unix(where / "fe.sock")
    box: dict[str, ReplayResult] = {}
    thread = threading.Thread(
        target=lambda: box.update(
            result=serve_backend(trace, where / "fe.sock", FAST, connect=True)
        )
    )
    thread.start()
    conn, _ = listener.accept()
    loaded = load(trace, Side.FRONTEND, FAST)
    [plan] = loaded.plans
    factory = FdFactory()
    session = SessionRunner(
        plan, Player(plan, loaded.rules), conn, factory=factory, options=LoopOptions(timeout=2.0)
    ).run()
    factory.close()
    thread.join(5)
    listener.close()
    assert session.divergences == []
    assert box["result"].exit_code == 0 and box["result"].play == "backend"
