"""``vhtrace record`` as a user runs it: signals, a killed recorder, permissions, the trace
file, usage; snapshot options; rings/memory usage errors."""

from __future__ import annotations

import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.memory.harness import Guest, exchange, region
from tests.record.harness import Peer, Recording
from vhtrace.cli.main import main
from vhtrace.protocol.messages import build
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EventRecord, MessageRecord, SnapshotRecord


def test_sigusr1_takes_a_snapshot_and_print_shows_it(tmp_path: Path) -> None:
    rec = Recording(tmp_path, "--snapshot", "signal", "--memory", "full", "--print")
    guest = Guest(1 << 20)
    guest.write(0x1000, b"hello from the guest")
    fe, be = rec.session()
    exchange(fe, be, "ADD_MEM_REG", region(1 << 20), fds=(guest.fd,))
    exchange(fe, be, "GET_FEATURES", reply={"features": 1})  # the recorder has seen the region
    time.sleep(0.2)
    rec.proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    code, out, err = rec.finish()
    guest.close()
    assert code == 0, err
    assert "snapshot 1 signal: 256 pages, 1 new (4 KiB)" in out
    with TraceReader(rec.trace) as reader:
        header = reader.header
        (snap,) = [r for r in reader if isinstance(r, SnapshotRecord)]
    assert header["version"] == 2
    assert header["options"]["snapshot"] == "signal" and header["options"]["memory"] == "full"
    assert snap.trigger == "signal" and snap.seq == 0


def test_without_the_signal_trigger_sigusr1_is_not_ours(tmp_path: Path) -> None:
    rec = Recording(tmp_path, "--memory", "none")
    code, _, err = rec.finish()
    assert code == 0, err
    with TraceReader(rec.trace) as reader:
        assert reader.header["options"]["memory"] == "none"
        assert not [r for r in reader if isinstance(r, SnapshotRecord)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--snapshot", "sometimes"], "--snapshot sometimes: expected start, stop"),
        (["--snapshot", "before:NOT_A_REQUEST"], "no request named 'NOT_A_REQUEST'"),
        (["--snapshot-hold", "-5"], "--snapshot-hold"),
    ],
)
def test_bad_snapshot_options_are_usage_errors(
    tmp_path: Path, args: list[str], message: str, capsys
) -> None:
    argv = [
        "record",
        "--listen",
        str(tmp_path / "f"),
        "--connect",
        str(tmp_path / "b"),
        "-w",
        str(tmp_path / "t.vht"),
        *args,
    ]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "t.vht")


def features_round_trips(fe: Peer, be: Peer, count: int) -> None:
    for _ in range(count):
        fe.send(build("GET_FEATURES"))
        be.read()
        be.send(build("GET_FEATURES", {"features": 1 << 32}, reply=True))
        fe.read()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_finishes_the_trace_and_prints_a_summary(tmp_path: Path, sig: int) -> None:
    rec = Recording(tmp_path)
    fe, be = rec.session()
    features_round_trips(fe, be, 3)
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
    features_round_trips(fe, be, 5)
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
    features_round_trips(fe, be, 2)
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
    features_round_trips(fe, be, 1)
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


# -- the trace path (-w): symlinks, existing files, locks, FIFOs, stdout --------------------

RECORD = [sys.executable, "-m", "vhtrace.cli.main", "record"]


def record_once(tmp_path: Path, trace: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """A recorder that must refuse to start: it exits by itself."""
    return subprocess.run([*RECORD, "--listen", str(tmp_path / "f.sock"), "--connect",
                           str(tmp_path / "b.sock"), "-w", trace, *extra],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_a_symlink_is_never_followed_even_with_force(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    target.chmod(0o644)
    link = tmp_path / "t.vht"
    link.symlink_to(target)
    for extra in ([], ["--force"]):
        done = record_once(tmp_path, str(link), *extra)
        assert done.returncode == 2, done.stderr
        assert "symlink" in done.stderr and str(link) in done.stderr, done.stderr
        assert target.read_text() == "keep me\n"
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        assert link.is_symlink()
        assert not (tmp_path / "f.sock").exists()


def test_an_existing_trace_is_refused_then_overwritten_with_force(tmp_path: Path) -> None:
    trace = tmp_path / "t.vht"
    trace.write_bytes(b"an older trace")
    trace.chmod(0o644)
    done = record_once(tmp_path, str(trace))
    assert done.returncode == 2
    assert "exists" in done.stderr and "--force" in done.stderr, done.stderr
    assert trace.read_bytes() == b"an older trace"
    assert not (tmp_path / "f.sock").exists(), "refused before the socket is made"

    rec = Recording(tmp_path, "--force", trace=trace)
    fe, be = rec.session()
    features_round_trips(fe, be, 1)
    code, _, err = rec.finish()
    assert code == 0, err
    assert stat.S_IMODE(trace.stat().st_mode) == 0o600
    with TraceReader(trace) as reader:
        assert sum(isinstance(r, MessageRecord) for r in reader) == 2
        assert reader.problem is None


def test_a_failed_start_leaves_the_trace_alone_and_creates_none(tmp_path: Path) -> None:
    old = tmp_path / "old.vht"
    old.write_bytes(b"an older trace")
    busy = tmp_path / "busy.sock"
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(str(busy))
    holder.listen()
    try:
        for listen in (str(busy), str(tmp_path / "no-such-dir" / "f.sock")):
            for trace, extra in ((old, ["--force"]), (tmp_path / "new.vht", [])):
                done = subprocess.run([*RECORD, "--listen", listen, "--connect", "x", "-w",
                                       str(trace), *extra], capture_output=True, text=True,
                                      timeout=30)  # fmt: skip
                assert done.returncode == 2, done.stderr
                assert listen in done.stderr, done.stderr
                assert old.read_bytes() == b"an older trace"
                assert not (tmp_path / "new.vht").exists()
    finally:
        holder.close()


def test_a_trace_another_recorder_holds_is_refused(tmp_path: Path) -> None:
    first = Recording(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    try:
        done = record_once(other, str(first.trace), "--force")
        assert done.returncode == 2, done.stderr
        assert "another recorder" in done.stderr and str(first.trace) in done.stderr, done.stderr
        assert not (other / "f.sock").exists()
        fe, be = first.session()
        features_round_trips(fe, be, 2)
    finally:
        code, _, err = first.finish()
    assert code == 0, err
    with TraceReader(first.trace) as reader:  # the live trace was not truncated under it
        assert sum(isinstance(r, MessageRecord) for r in reader) == 4
        assert reader.problem is None


def test_a_fifo_waits_for_its_reader_after_the_socket_is_up(tmp_path: Path) -> None:
    fifo = tmp_path / "t.fifo"
    os.mkfifo(fifo)
    front, back = tmp_path / "f.sock", tmp_path / "b.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(back))
    server.listen()
    proc = subprocess.Popen([*RECORD, "--listen", str(front), "--connect", str(back), "-w",
                             str(fifo)], stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    assert proc.stderr is not None
    stderr = proc.stderr
    threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True).start()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    try:
        # A guard, not a timing check: a recorder that blocks silently fails here, not hangs.
        line = lines.get(timeout=30)  # printed before the open that waits
        assert "waiting for a reader" in line and str(fifo) in line, line
        assert front.exists(), "the socket is made before waiting for the FIFO"
        reader.start()
        assert "recording:" in lines.get(timeout=30)
        fe = socket.socket(socket.AF_UNIX)
        fe.connect(str(front))
        be, _ = server.accept()
        features_round_trips(Peer(fe), Peer(be), 1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        reader.join(15)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
    assert not reader.is_alive() and got
    copy = tmp_path / "copy.vht"
    copy.write_bytes(got[0])
    with TraceReader(copy) as trace:
        assert sum(isinstance(r, MessageRecord) for r in trace) == 2
        assert trace.problem is None


def test_dash_writes_the_trace_to_stdout(tmp_path: Path) -> None:
    rec = Recording(tmp_path, trace=Path("-"))
    fe, be = rec.session()
    features_round_trips(fe, be, 1)
    code, _, err = rec.finish()
    assert code == 0, err
    assert not (tmp_path / "-").exists() and not Path("-").exists()
    copy = tmp_path / "copy.vht"
    copy.write_bytes(rec.out)
    with TraceReader(copy) as trace:
        assert sum(isinstance(r, MessageRecord) for r in trace) == 2
        assert trace.problem is None
    both = record_once(tmp_path, "-", "--print")
    assert both.returncode == 2 and "--print" in both.stderr


# -- option values ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["-1", "4777", "1777", "01000", "778", "0o1000", "", "rw",
                                  "7" * 40])  # fmt: skip
def test_socket_mode_out_of_range_is_a_usage_error(tmp_path: Path, mode: str) -> None:
    done = record_once(tmp_path, str(tmp_path / "t.vht"), "--socket-mode", mode)
    assert done.returncode == 2, done.stderr
    assert "--socket-mode" in done.stderr and "0777" in done.stderr, done.stderr
    assert repr(mode) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "t.vht").exists() and not (tmp_path / "f.sock").exists()


@pytest.mark.parametrize("mode, expected", [("0", 0), ("777", 0o777), ("0o640", 0o640)])
def test_socket_mode_bounds_are_accepted(tmp_path: Path, mode: str, expected: int) -> None:
    rec = Recording(tmp_path, "--socket-mode", mode)
    try:
        assert stat.S_IMODE(os.lstat(rec.front).st_mode) == expected
    finally:
        rec.finish()


@pytest.mark.parametrize("option", ["--listen", "--connect"])
def test_a_socket_path_too_long_for_sun_path_is_named(tmp_path: Path, option: str) -> None:
    long_path = str(tmp_path / ("s" * 120))
    paths = {"--listen": str(tmp_path / "f.sock"), "--connect": str(tmp_path / "b.sock")}
    paths[option] = long_path
    done = subprocess.run([*RECORD, "--listen", paths["--listen"], "--connect",
                           paths["--connect"], "-w", str(tmp_path / "t.vht")],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert option in done.stderr and long_path in done.stderr, done.stderr
    assert f"{len(long_path)} bytes" in done.stderr and "107" in done.stderr, done.stderr
    assert "None" not in done.stderr
    assert not (tmp_path / "t.vht").exists()


def test_a_socket_path_of_107_bytes_is_fine(tmp_path: Path) -> None:
    base = str(tmp_path) + "/"
    name = "x" * (107 - len(os.fsencode(base)))
    assert name, "tmp_path too long for this test"
    (tmp_path / name).write_bytes(b"")  # a regular file: refused for what it is, not its length
    done = record_once(tmp_path, str(tmp_path / "t.vht"), "--listen", base + name)
    assert done.returncode == 2
    assert "is not a socket" in done.stderr and "bytes" not in done.stderr, done.stderr


def test_a_missing_back_end_is_said_at_start_and_live_when_a_session_gives_up(
    tmp_path: Path,
) -> None:
    front, missing = tmp_path / "f.sock", tmp_path / "nobody.sock"
    argv = [*RECORD, "--listen", str(front), "--connect", str(missing),
            "--connect-timeout", "0.3", "-w", str(tmp_path / "t.vht")]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    stderr = proc.stderr
    threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True).start()
    said = [lines.get(timeout=10), lines.get(timeout=10)]
    assert f"{missing}: no such socket yet" in said[1], said
    qemu = socket.socket(socket.AF_UNIX)
    qemu.connect(str(front))
    live = lines.get(timeout=10)  # before the recorder stops: QEMU only sees EOF
    assert f"session 1: could not reach the backend: {missing}: no such socket" in live, live
    assert qemu.recv(12) == b""
    qemu.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) in (0, 1)


def test_failed_sessions_are_counted_as_show_lists_them_and_the_exit_is_1(tmp_path: Path) -> None:
    front, missing, trace = tmp_path / "f.sock", tmp_path / "nobody.sock", tmp_path / "t.vht"
    proc = subprocess.Popen([*RECORD, "--listen", str(front), "--connect", str(missing),
                             "--connect-timeout", "0.2", "-w", str(trace)],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 10
    while not (front.exists() and trace.exists()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    for _ in range(3):
        qemu = socket.socket(socket.AF_UNIX)
        qemu.connect(str(front))
        qemu.settimeout(10)
        assert qemu.recv(12) == b""  # the session gave up: nobody at the back-end path
        qemu.close()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    summary = err.strip().splitlines()[-1]
    assert proc.returncode == 1, f"sessions failed: expected exit 1, got {proc.returncode}; {err}"
    with TraceReader(trace) as reader:
        sessions = {r.session for r in reader if isinstance(r, EventRecord)}
    assert sessions == {1, 2, 3}
    assert f"{len(sessions)} sessions ({len(sessions)} FAILED)" in summary, summary


def test_a_second_recorder_probing_the_path_leaves_no_session_in_the_first(
    tmp_path: Path,
) -> None:
    rec = Recording(tmp_path)
    second = record_once(tmp_path, str(tmp_path / "second.vht"))  # the same --listen path
    assert second.returncode == 2 and "already listening" in second.stderr, second.stderr
    rec.server.settimeout(0.5)
    with pytest.raises(TimeoutError):
        rec.server.accept()  # the first recorder made no back-end connection
    code, _, err = rec.finish()
    assert code == 0, err
    assert "0 messages (none), 0 sessions" in err.strip().splitlines()[-1], err
    with TraceReader(rec.trace) as reader:
        assert not [r for r in reader if isinstance(r, EventRecord)]
