"""``vhtrace replay`` from the command line: exit codes, text, --json, --report."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.replay.builders import conversation, with_reply, write_trace
from vhtrace.cli.main import main

VHTRACE = [sys.executable, "-m", "vhtrace.cli.main"]


@pytest.fixture
def where() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vhr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serving(trace: Path, sock: Path, *args: str) -> subprocess.Popen[str]:
    """``vhtrace replay --serve`` in the background, once it listens."""
    proc = subprocess.Popen(
        [*VHTRACE, "replay", str(trace), "--serve", str(sock), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc


def test_same_conversation_exit_0_with_json_and_junit(
    tmp_path: Path, where: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    server = serving(trace, where / "be.sock")
    junit = tmp_path / "junit.xml"
    code = main(
        [
            "replay",
            str(trace),
            "--backend",
            str(where / "be.sock"),
            "--json",
            "--report",
            str(junit),
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["result"], data["messages"]) == ("same", 26)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("tests") == "9"
    out, err = server.communicate(timeout=10)
    assert server.returncode == 0, out + err
    assert "listening on" in err and "result: same" in out


def test_divergence_exit_1_and_the_report(
    tmp_path: Path, where: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = write_trace(tmp_path / "rec.vht", [conversation()])
    other = write_trace(
        tmp_path / "other.vht", [with_reply(conversation(), "GET_QUEUE_NUM", {"value": 2})]
    )
    server = serving(other, where / "be.sock")
    code = main(["replay", str(recorded), "--backend", str(where / "be.sock")])
    out = capsys.readouterr().out
    assert code == 1
    assert "diverged at #7 GET_QUEUE_NUM reply: value differs" in out
    assert "value: recorded 1, live 2" in out
    server.communicate(timeout=10)
    assert server.returncode == 1  # the served side saw the front-end leave early


def test_ignore_turns_it_into_same(tmp_path: Path, where: Path) -> None:
    recorded = write_trace(tmp_path / "rec.vht", [conversation()])
    other = write_trace(
        tmp_path / "other.vht", [with_reply(conversation(), "GET_QUEUE_NUM", {"value": 2})]
    )
    server = serving(other, where / "be.sock")
    code = main(
        [
            "replay",
            str(recorded),
            "--backend",
            str(where / "be.sock"),
            "--ignore",
            "GET_QUEUE_NUM.value",
        ]
    )
    assert code == 0
    server.communicate(timeout=10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ignore", "NOPE.x"], "no request is called NOPE"),
        (["--mask-features", "WHAT"], "no virtio feature of that name"),
        (["--loose"], "--loose and --unknown are for --serve"),
        (["--timeout", "0"], "--timeout must be positive"),
    ],
)
def test_bad_options_exit_2(
    tmp_path: Path, where: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    with pytest.raises(SystemExit) as exited:
        code = main(["replay", str(trace), "--backend", str(where / "x.sock"), *args])
        raise SystemExit(code)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err + captured.out


def test_unusable_inputs_exit_2(tmp_path: Path, where: Path, capsys) -> None:
    bogus = tmp_path / "bogus.vht"
    bogus.write_bytes(b"not a trace")
    assert main(["replay", str(bogus), "--backend", str(where / "x.sock")]) == 2
    assert "not a vhtrace trace" in capsys.readouterr().err
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    code = main(
        ["replay", str(trace), "--backend", str(where / "x.sock"), "--connect-timeout", "0.1"]
    )
    assert code == 2
    assert "cannot reach the back-end" in capsys.readouterr().err
    assert main(["replay", str(trace), "--backend", "x", "--session", "9"]) == 2
    assert "no messages in session 9" in capsys.readouterr().err


def test_serve_stops_on_sigterm(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    server = serving(trace, where / "be.sock")
    server.send_signal(signal.SIGTERM)
    _, err = server.communicate(timeout=10)
    assert server.returncode == 2
    assert "stopped before a front-end came to" in err
    assert not (where / "be.sock").exists()
