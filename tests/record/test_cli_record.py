"""``vhtrace record`` as a user runs it: signals, a killed recorder, permissions, usage."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.record.harness import Peer
from vhtrace.protocol.messages import build
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import MessageRecord


class Recording:
    """A ``vhtrace record --listen F --connect B`` process and a fake back-end."""

    def __init__(self, tmp_path: Path, *extra: str, umask: int | None = None) -> None:
        self.front = str(tmp_path / "f.sock")
        self.back = str(tmp_path / "b.sock")
        self.trace = tmp_path / "t.vht"
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.back)
        self.server.listen()
        self.server.settimeout(5)
        argv = [sys.executable, "-m", "vhtrace.cli.main", "record", "--listen", self.front,
                "--connect", self.back, "-w", str(self.trace), *extra]  # fmt: skip

        def preexec() -> None:
            if umask is not None:
                os.umask(umask)

        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=preexec)  # fmt: skip
        deadline = time.monotonic() + 10
        while not os.path.exists(self.front):
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def session(self) -> tuple[Peer, Peer]:
        fe = socket.socket(socket.AF_UNIX)
        fe.connect(self.front)
        be, _ = self.server.accept()
        return Peer(fe), Peer(be)

    def finish(self, sig: int = signal.SIGINT) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=15)
        self.server.close()
        return self.proc.returncode, out.decode(), err.decode()


def exchange(fe: Peer, be: Peer, count: int) -> None:
    for _ in range(count):
        fe.send(build("GET_FEATURES"))
        be.read()
        be.send(build("GET_FEATURES", {"features": 1 << 32}, reply=True))
        fe.read()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_finishes_the_trace_and_prints_a_summary(tmp_path: Path, sig: int) -> None:
    rec = Recording(tmp_path)
    fe, be = rec.session()
    exchange(fe, be, 3)
    code, _, err = rec.finish(sig)
    assert code == 0, err
    summary = err.strip().splitlines()[-1]
    assert "6 messages (main 6), 1 session, 0 findings" in summary, summary
    with TraceReader(rec.trace) as reader:
        records = list(reader)
        assert reader.problem is None  # complete: it has its end record
    assert reader.end is not None and reader.end.summary["messages"] == {"main": 6}
    assert sum(isinstance(r, MessageRecord) for r in records) == 6


def test_killed_recorder_leaves_a_readable_trace(tmp_path: Path) -> None:
    rec = Recording(tmp_path)
    fe, be = rec.session()
    exchange(fe, be, 5)
    time.sleep(0.5)  # well past the 100 ms flush interval
    rec.proc.kill()
    rec.proc.wait(10)
    rec.server.close()
    with TraceReader(rec.trace) as reader:
        records = list(reader)
        problem = reader.problem
    assert sum(isinstance(r, MessageRecord) for r in records) == 10
    assert problem is not None and "no end record" in problem


def test_show_on_a_killed_recorders_trace_prints_and_exits_2(tmp_path: Path) -> None:
    rec = Recording(tmp_path)
    fe, be = rec.session()
    exchange(fe, be, 2)
    time.sleep(0.4)
    rec.proc.kill()
    rec.proc.wait(10)
    rec.server.close()
    shown = subprocess.run([sys.executable, "-m", "vhtrace.cli.main", "show", str(rec.trace)],
                           capture_output=True, text=True)  # fmt: skip
    assert shown.returncode == 2
    assert shown.stdout.count("GET_FEATURES") == 4
    assert "no end record" in shown.stderr


def test_socket_and_trace_are_private_whatever_the_umask(tmp_path: Path) -> None:
    rec = Recording(tmp_path, umask=0)
    assert stat.S_IMODE(os.stat(rec.front).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(rec.trace).st_mode) == 0o600
    rec.finish()


def test_socket_mode_option(tmp_path: Path) -> None:
    rec = Recording(tmp_path, "--socket-mode", "0660")
    assert stat.S_IMODE(os.stat(rec.front).st_mode) == 0o660
    rec.finish()


def test_print_shows_messages_live(tmp_path: Path) -> None:
    rec = Recording(tmp_path, "--print")
    fe, be = rec.session()
    exchange(fe, be, 1)
    code, out, _ = rec.finish()
    assert code == 0
    lines = [line for line in out.splitlines() if "GET_FEATURES" in line]
    assert len(lines) == 2 and "FE>BE" in lines[0] and "reply #1" in lines[1]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "vhtrace.cli.main", "record"]
    both = subprocess.run([*cli, "--listen", "a", "--listen-backend", "b", "-w",
                           str(tmp_path / "t")], capture_output=True, text=True)  # fmt: skip
    assert both.returncode == 2 and "give either" in both.stderr
    busy = tmp_path / "busy.sock"
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(str(busy))
    holder.listen()
    taken = subprocess.run([*cli, "--listen", str(busy), "--connect", "x", "-w",
                            str(tmp_path / "t")], capture_output=True, text=True)  # fmt: skip
    holder.close()
    assert taken.returncode == 2 and "already listening" in taken.stderr
