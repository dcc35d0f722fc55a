"""``vhtrace fuzz`` end to end against the planted-bug back-end (tests/fuzz/planted.py),
a real program the fuzzer starts, crashes, restarts and stops."""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vhtrace.trace.reader import TraceReader

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "traces" / "qemu-qsd-blk.vht"
PLANTED = Path(__file__).with_name("planted.py")
VHTRACE = [sys.executable, "-m", "vhtrace"]


def planted(*args: str) -> str:
    return shlex.join([sys.executable, str(PLANTED), "--socket", "{sock}", *args])


def fuzz(tmp_path: Path, backend: str, *args: str, timeout: float = 300) -> tuple[int, dict]:
    done = subprocess.run(
        [*VHTRACE, "fuzz", str(TRACE), "--backend-cmd", backend, "--json", "-q",
         "--out", str(tmp_path / "found"), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def stray(report: dict) -> list[int]:
    """Processes still running that were started with this run's socket path."""
    sock = next(arg for arg in report["backend"] if arg.endswith(".sock"))
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if sock.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_finds_the_planted_crash_and_minimizes_it_to_the_culprit(tmp_path: Path) -> None:
    code, report = fuzz(tmp_path, planted("--crash-above", "1024"),
                        "--seed", "7", "--iterations", "60", "--timeout", "1",
                        "--minimize-tests", "40")  # fmt: skip
    assert code == 1 and report["result"] == "found"
    assert report["iterations"] == 60 and sum(report["outcomes"].values()) == 60
    [crash] = [f for f in report["findings"] if f["kind"] == "crash"]
    assert crash["signature"] == "crash SIGSEGV"
    assert crash["reproduced"] is True
    assert any("SET_VRING_NUM" in m and "num" in m for m in crash["mutations"])
    minimized = crash["minimized"]
    assert minimized["messages"] <= 2
    assert any("SET_VRING_NUM" in line and "num" in line for line in minimized["case"])
    repro = Path(minimized["reproducer"])
    assert repro.stat().st_mode & 0o777 == 0o600
    with TraceReader(repro) as reader:
        assert reader.header["fuzz"]["signature"] == "crash SIGSEGV"
    shown = subprocess.run([*VHTRACE, "show", str(repro)], capture_output=True, text=True)
    assert shown.returncode == 0 and "SET_VRING_NUM" in shown.stdout
    assert report["backend_starts"] >= 2  # restarted after the crash
    assert stray(report) == []


def test_start_runs_a_findings_iteration_alone(tmp_path: Path) -> None:
    """Iteration i of a seed is the same case whatever ran before it: --start i
    --iterations 1 finds what the campaign found at i, under the same number."""
    _, report = fuzz(tmp_path, planted("--crash-above", "1024"),
                     "--seed", "7", "--iterations", "60", "--no-minimize")  # fmt: skip
    [crash] = [f for f in report["findings"] if f["kind"] == "crash"]
    first = crash["iteration"]
    assert first > 0  # else --start would prove nothing
    code, alone = fuzz(tmp_path / "alone", planted("--crash-above", "1024"), "--seed", "7",
                       "--start", str(first), "--iterations", "1", "--no-minimize")  # fmt: skip
    assert code == 1 and alone["iterations"] == 1
    [again] = alone["findings"]
    assert (again["iteration"], again["signature"], again["mutations"]) == (
        first,
        crash["signature"],
        crash["mutations"],
    )
    # one before it finds nothing of it
    _, before = fuzz(tmp_path / "before", planted("--crash-above", "1024"), "--seed", "7",
                     "--start", str(first - 1), "--iterations", "1", "--no-minimize")  # fmt: skip
    assert all(f["iteration"] != first for f in before["findings"])


def test_a_minimized_reproducer_still_crashes_a_fresh_back_end(tmp_path: Path) -> None:
    _, report = fuzz(tmp_path, planted("--crash-above", "1024"),
                     "--seed", "7", "--iterations", "10", "--minimize-tests", "40")  # fmt: skip
    [crash] = [f for f in report["findings"] if f["kind"] == "crash"]
    repro = crash["minimized"]["reproducer"]
    sock = tmp_path / "b.sock"
    backend = subprocess.Popen(
        [sys.executable, str(PLANTED), "--socket", str(sock), "--crash-above", "1024"]
    )
    try:
        _wait_listening(sock)
        subprocess.run([*VHTRACE, "replay", repro, "--backend", str(sock)],
                       capture_output=True, timeout=60)  # fmt: skip
        assert backend.wait(10) == -signal.SIGSEGV
    finally:
        backend.kill()
        backend.wait()


def test_finds_the_planted_hang(tmp_path: Path) -> None:
    code, report = fuzz(tmp_path, planted("--hang-on-ring", "1"),
                        "--seed", "7", "--iterations", "100", "--timeout", "0.5",
                        "--mutate", "field", "--no-minimize")  # fmt: skip
    assert code == 1
    hangs = [f for f in report["findings"] if f["signature"] == "hang GET_VRING_BASE"]
    assert hangs and hangs[0]["reproduced"] is True
    assert Path(hangs[0]["reproducer"]).exists()
    assert stray(report) == []
    # replay shows the hang: it waits for the reply the recording never got, and says so
    repro = hangs[0]["reproducer"]
    hung = replay_against(tmp_path, repro, "--hang-on-ring", "1")
    assert hung.returncode == 0, hung.stdout
    assert "GET_VRING_BASE: no reply within 1 s, as in the recording" in hung.stdout
    # against a back-end without the bug the reply comes: not what the recording shows
    fixed = replay_against(tmp_path, repro)
    assert fixed.returncode == 1, fixed.stdout
    assert "GET_VRING_BASE reply, which the recording does not have" in fixed.stdout


def replay_against(tmp_path: Path, trace: str, *planted_args: str) -> subprocess.CompletedProcess:
    """``vhtrace replay TRACE --timeout 1`` against a fresh planted back-end."""
    sock = tmp_path / "replayed.sock"
    sock.unlink(missing_ok=True)
    backend = subprocess.Popen([sys.executable, str(PLANTED), "--socket", str(sock), *planted_args])
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return subprocess.run(
            [*VHTRACE, "replay", trace, "--backend", str(sock), "--timeout", "1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        backend.kill()
        backend.wait(10)


def test_a_back_end_that_refuses_bad_input_cleanly_yields_no_finding(tmp_path: Path) -> None:
    # --timeout 5: on a loaded machine a slow reply must not look like a hang
    code, report = fuzz(tmp_path, planted("--strict"), "--seed", "7", "--iterations", "80",
                        "--timeout", "5")  # fmt: skip
    assert code == 0, report["findings"]
    assert report["findings"] == [] and report["result"] == "nothing found"
    assert report["iterations"] == 80
    assert report["outcomes"]["disconnect"] > 20 and report["outcomes"]["ok"] > 5
    assert report["baseline"].startswith("ok")
    assert report["backend_starts"] == 1  # never died, never restarted
    assert not (tmp_path / "found").exists()
    assert stray(report) == []


def test_time_bound_and_text_report(tmp_path: Path) -> None:
    done = subprocess.run(
        [*VHTRACE, "fuzz", str(TRACE), "--backend-cmd", planted("--strict"), "--time", "2",
         "--out", str(tmp_path / "found")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "result: nothing found, exit 0" in done.stdout
    assert "unmutated trace: ok" in done.stdout
    # --time 2 ended it (with no --iterations the default would be 1000)
    [(iterations, elapsed)] = re.findall(r"seed 0: (\d+) iterations in ([\d.]+) s", done.stdout)
    assert 0 < int(iterations) < 1000 and float(elapsed) >= 2.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend-cmd", "true"], "{sock}"),
        (["--backend-cmd", "'unclosed {sock}"], "--backend-cmd"),
        (["--backend-cmd", planted(), "--mutate", "field,bogus"], "--mutate bogus"),
        (["--backend-cmd", planted(), "--iterations", "0"], "--iterations must be positive"),
        (["--backend-cmd", planted(), "--start", "-1"], "--start must be 0 or more"),
        (["--backend-cmd", "false {sock}"], "exited (status 1) before listening"),
        (["--frontend-cmd", "qemu {sock}", "--mutate", "ring"], "--mutate: ring: the front-end"),
    ],
)
def test_bad_usage_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run([*VHTRACE, "fuzz", str(TRACE), *args], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr


def test_not_a_trace_exits_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.vht"
    junk.write_bytes(b"not a trace")
    done = subprocess.run([*VHTRACE, "fuzz", str(junk), "--backend-cmd", planted()],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "junk.vht" in done.stderr


def _wait_listening(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
            return
        except OSError:
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError(f"nothing listens on {path}")
