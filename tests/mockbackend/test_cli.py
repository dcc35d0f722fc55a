"""The ``mockbackend`` command: usage errors, the socket's mode, client mode, exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mockbackend import Script, expect
from mockbackend.cli import main
from mockbackend.faults import UnknownRequest
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


# ----------------------------------------------------------------------------
# What the ``mockbackend`` command says and does (issue 18.6): a line per fault fired,
# ----------------------------------------------------------------------------


def run_module(*args: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    """mockbackend in a subprocess; ``ignore_sigint`` as a shell starts a ``&`` job."""
    return subprocess.Popen(
        [sys.executable, "-m", "mockbackend", *args],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if ignore_sigint
        else None,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"mockbackend did not exit; stderr:\n{err}")
    return proc.returncode, err


def ask(path: Path, name: str) -> None:
    """Connect, send ``name`` (no reply awaited), hang up."""
    sock = connect_unix(path, 30)
    wire.send_frame(sock, build(name))
    sock.close()


def drop_script(tmp_path: Path) -> Path:
    script = tmp_path / "drop.py"
    script.write_text(
        "from mockbackend import Drop\n"
        "def configure(script):\n"
        "    script.fault(Drop(), on='GET_QUEUE_NUM', nth=2)\n"
    )
    return script


@pytest.mark.parametrize("quiet", [False, True], ids=["default", "quiet"])
def test_each_fault_that_fires_is_a_line_on_stderr(tmp_path: Path, quiet: bool) -> None:
    path = tmp_path / "m.sock"
    flags = ["-q"] if quiet else []
    proc = run_module(
        "--socket", str(path), "--device", "rng", "--script", str(drop_script(tmp_path)), *flags
    )
    sock = connect_unix(path, 30)
    reader = wire.MessageReader(sock)
    wire.send_frame(sock, build("GET_QUEUE_NUM"))
    assert reader.read() is not None  # the first one is answered
    wire.send_frame(sock, build("GET_FEATURES"))
    assert reader.read() is not None
    wire.send_frame(sock, build("GET_QUEUE_NUM"))  # the 3rd message, 2nd GET_QUEUE_NUM: dropped
    sock.close()
    code, err = finish(proc)
    assert code == 0, err
    line = "mockbackend: fault Drop fired on #5 GET_QUEUE_NUM\n"
    if quiet:
        assert "fired" not in err
    else:
        assert err.count("fired") == 1 and line in err, err


@pytest.mark.parametrize(
    ("body", "line", "error"),
    [
        (
            "def configure(script):\n    script.fault(Drop(), on='GET_FEATURE')\n",
            3,
            "unknown request 'GET_FEATURE' (did you mean GET_FEATURES,",
        ),
        (
            "def configure(script):\n"
            "    script.fault(WrongRequest('GET_STATU'), on='GET_FEATURES')\n",
            3,
            "unknown request 'GET_STATU' (did you mean GET_STATUS,",
        ),
        (
            "def configure(script):\n    script.expect(expect.never('RESET_OWNR'))\n",
            3,
            "unknown request 'RESET_OWNR' (did you mean RESET_OWNER",
        ),
        ("def configure(script):\n    {}['x']\n", 3, "KeyError: 'x'"),
        ("def configure(script):\n    return 1 +\n", 3, "SyntaxError: invalid syntax"),
        ("import no_such_module_here\n", 2, "ModuleNotFoundError: No module named"),
    ],
    ids=["fault-on", "wrong-request", "expect-name", "raises", "syntax", "import"],
)
def test_a_script_that_fails_to_load_is_one_line_and_exit_2(
    tmp_path: Path, body: str, line: int, error: str
) -> None:
    script = tmp_path / "bad.py"
    script.write_text("from mockbackend import Drop, WrongRequest, expect\n" + body)
    path = tmp_path / "m.sock"
    code, err = finish(
        run_module("--socket", str(path), "--device", "rng", "--script", str(script))
    )
    assert code == 2, err
    assert "Traceback" not in err
    [text] = err.splitlines()
    assert text.startswith(f"mockbackend: --script {script}, line {line}: "), text
    assert error in text
    assert not path.exists()


def test_a_script_that_raises_while_serving_is_one_line_and_exit_2(tmp_path: Path) -> None:
    script = tmp_path / "hook.py"
    script.write_text(
        "def configure(script):\n"
        "    @script.after('GET_FEATURES')\n"
        "    def broken(ctx, msg, reply):\n"
        "        raise RuntimeError('boom')\n"
    )
    path = tmp_path / "m.sock"
    proc = run_module("--socket", str(path), "--device", "rng", "--script", str(script))
    sock = connect_unix(path, 30)
    wire.send_frame(sock, build("GET_FEATURES"))
    assert wire.MessageReader(sock).read() is not None  # answered before the hook raised
    sock.close()
    code, err = finish(proc)
    assert code == 2, err
    assert "Traceback" not in err
    assert f"hook broken raised at {script}, line 4: RuntimeError: boom" in err


def test_unknown_request_names_say_did_you_mean() -> None:
    with pytest.raises(UnknownRequest) as info:
        Script().on("GET_FEATURE")
    assert str(info.value).startswith("unknown request 'GET_FEATURE' (did you mean GET_FEATURES")
    with pytest.raises(KeyError):  # still a KeyError for callers that caught one
        expect.order("SET_OWNER", "SET_MEM_TABL")
    assert "did you mean" not in str(UnknownRequest("XYZZY"))


def test_a_count_expectation_is_one_sentence(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "from mockbackend import expect\n"
        "def configure(script):\n"
        "    script.expect(expect.never('GET_QUEUE_NUM'))\n"
        "    script.expect(expect.received('SET_OWNER'))\n"
        "    script.expect(expect.received('GET_FEATURES', 2, 3))\n"
    )
    path = tmp_path / "m.sock"
    report = tmp_path / "r.json"
    proc = run_module(
        "--socket", str(path), "--device", "rng", "--script", str(script), "--report", str(report)
    )
    sock = connect_unix(path, 30)
    reader = wire.MessageReader(sock)
    for _ in range(7):
        wire.send_frame(sock, build("GET_QUEUE_NUM"))
        assert reader.read() is not None
    sock.close()
    code, err = finish(proc)
    assert code == 1, err
    [data] = json.loads(report.read_text())
    assert data["expectation_failures"] == [
        "expected GET_QUEUE_NUM 0 times, received 7 (#1, #3, #5, #7, #9, ...)",
        "expected SET_OWNER at least 1 time, received 0",
        "expected GET_FEATURES 2 to 3 times, received 0",
    ]
    assert "0..0" not in err and "times: " not in err


def test_the_session_count_reached_is_said_and_the_socket_removed(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    proc = run_module("--socket", str(path), "--device", "rng")
    ask(path, "GET_FEATURES")
    code, err = finish(proc)
    assert code == 0, err
    assert (
        f"mockbackend: served 1 of --sessions 1: exiting, {path} removed "
        "(a front-end that reconnects needs --sessions 0)"
    ) in err
    assert not path.exists()


def test_sessions_0_serves_reconnections_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    report = tmp_path / "r.json"
    proc = run_module(
        "--socket", str(path), "--device", "rng", "--sessions", "0", "--report", str(report)
    )
    for _ in range(3):
        sock = connect_unix(path, 30)
        wire.send_frame(sock, build("GET_FEATURES"))
        assert wire.MessageReader(sock).read() is not None  # served: the socket stayed
        sock.close()
    sock = connect_unix(path, 30)  # a 4th connection, open when the signal comes
    wire.send_frame(sock, build("GET_FEATURES"))
    assert wire.MessageReader(sock).read() is not None
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    sock.close()
    assert code == 0, err
    assert not path.exists()
    reports = json.loads(report.read_text())
    assert len(reports) == 4
    assert reports[-1]["closed_by"] == "stopped by SIGTERM"
    assert f"mockbackend: stopped by SIGTERM; {path} removed" in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_a_background_job_stops_on_sigint_and_sigterm(tmp_path: Path, signum: int) -> None:
    path = tmp_path / "m.sock"
    report = tmp_path / "r.json"
    proc = run_module(
        "--socket", str(path), "--device", "rng", "--report", str(report), ignore_sigint=True
    )
    sock = connect_unix(path, 30)  # listening: the handlers are installed by now
    wire.send_frame(sock, build("GET_FEATURES"))
    assert wire.MessageReader(sock).read() is not None
    proc.send_signal(signum)
    code, err = finish(proc)
    sock.close()
    assert code == 0, err
    assert not path.exists()
    name = signal.Signals(signum).name
    [data] = json.loads(report.read_text())
    assert data["closed_by"] == f"stopped by {name}"
    assert "Traceback" not in err


def test_a_signal_while_waiting_for_a_connection(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    proc = run_module(
        "--socket", str(path), "--device", "rng", "--sessions", "0", ignore_sigint=True
    )
    connect_unix(path, 30).close()  # a session that ends at once; it goes on waiting in accept()
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert code == 0, err
    assert not path.exists()
    assert f"mockbackend: stopped by SIGINT; {path} removed" in err


def test_the_help_says_how_sessions_and_signals_behave(capsys: pytest.CaptureFixture[str]) -> None:
    from mockbackend.cli import main

    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "reconnect=N) needs 0" in text
    assert "SIGINT (Ctrl-C) and SIGTERM stop it cleanly" in text


def test_negative_sessions_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from mockbackend.cli import main

    assert main(["--socket", "x.sock", "--device", "rng", "--sessions", "-1"]) == 2
    assert "--sessions -1: expected 0 or more" in capsys.readouterr().err
