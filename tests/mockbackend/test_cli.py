"""The ``mockbackend`` command: usage errors, the socket's mode, client mode, exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mockbackend.cli import main
from vhtrace import wire
from vhtrace.protocol.messages import build
from vhtrace.wire import connect_unix


def run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mockbackend.cli", *args], stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--socket", "x.sock", "--device", "blk"],
        ["--socket", "x.sock", "--device", "blk", "--disk", "/does/not/exist"],
        ["--socket", "x.sock", "--device", "floppy"],
        ["--socket", "x.sock", "--device", "rng", "--script", "/does/not/exist.py"],
    ],
    ids=["no-socket", "blk-without-disk", "missing-disk", "unknown-device", "missing-script"],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "mockbackend" in capsys.readouterr().err


def test_server_socket_is_private_and_a_session_ends_with_0(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    path = tmp_path / "m.sock"
    proc = run(
        "--socket",
        str(path),
        "--device",
        "blk",
        "--disk",
        str(disk),
        "--report",
        str(tmp_path / "r.json"),
    )
    sock = connect_unix(path, 30)
    assert os.stat(path).st_mode & 0o777 == 0o600
    wire.send_frame(sock, build("GET_FEATURES"))
    assert wire.MessageReader(sock).read() is not None
    sock.close()
    assert proc.wait(10) == 0
    [report] = json.loads((tmp_path / "r.json").read_text())
    assert report["messages"] == 1


def test_client_mode_with_a_failing_expectation_exits_1(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "from mockbackend import expect\n"
        "def configure(script):\n"
        "    script.expect(expect.received('SET_MEM_TABLE'))\n"
    )
    path = tmp_path / "fe.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    proc = run("--socket", str(path), "--connect", "--device", "rng", "--script", str(script))
    conn, _ = listener.accept()
    wire.send_frame(conn, build("GET_FEATURES"))
    assert wire.MessageReader(conn).read() is not None
    conn.close()
    listener.close()
    assert proc.wait(10) == 1
    assert "expected SET_MEM_TABLE at least 1 time, received 0\n" in proc.stderr.read()


def test_violations_fail_only_when_asked(tmp_path: Path) -> None:
    for flag, code in (([], 0), (["--fail-on-violations"], 1)):
        path = tmp_path / f"v{code}.sock"
        proc = run("--socket", str(path), "--device", "rng", *flag)
        sock = connect_unix(path, 30)
        wire.send_frame(sock, build("SET_VRING_NUM", {"index": 0, "num": 3}))
        sock.close()
        assert proc.wait(10) == code
        assert "ring size 3 is not a power of two" in proc.stderr.read()
