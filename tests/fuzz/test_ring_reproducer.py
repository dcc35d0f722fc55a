"""A ring mutation's reproducer replays: the descriptor chain the fuzzer wrote into guest
memory and the kick are events of the reproducer, and ``vhtrace replay REPRO --backend``
makes them again, so the planted back-end that follows looping chains into a SIGSEGV
(``planted.py --crash-on-loop``) dies of the replay too; without those events it does not."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.fuzz.test_fuzz_cli import PLANTED, VHTRACE, fuzz, planted
from vhtrace.replay.guestwrites import GUEST_WRITE, RING_KICK
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EventRecord, MessageRecord
from vhtrace.trace.writer import TraceWriter


def replay_against_planted(tmp_path: Path, trace: Path) -> tuple[int | None, str]:
    """Replay ``trace`` against a fresh planted back-end; its exit status (None: alive)."""
    sock = tmp_path / "p.sock"
    sock.unlink(missing_ok=True)
    backend = subprocess.Popen([sys.executable, str(PLANTED), "--socket", str(sock),
                                "--crash-on-loop"])  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        done = subprocess.run([*VHTRACE, "replay", str(trace), "--backend", str(sock)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        try:
            return backend.wait(3), done.stdout
        except subprocess.TimeoutExpired:
            return None, done.stdout
    finally:
        backend.kill()
        backend.wait(10)


def without_guest_actions(source: Path, path: Path) -> Path:
    with TraceReader(source) as reader:
        writer = TraceWriter(str(path), reader.header)
        for record in reader:
            if isinstance(record, MessageRecord):
                writer.message(*record)
            elif isinstance(record, EventRecord) and record.event not in (GUEST_WRITE, RING_KICK):
                writer.event(*record)
    writer.close()
    return path


def test_a_ring_mutation_reproducer_replays_the_finding(tmp_path: Path) -> None:
    code, report = fuzz(tmp_path, planted("--crash-on-loop"), "--mutate", "ring", "--seed", "1",
                        "--iterations", "40", "--minimize-tests", "60")  # fmt: skip
    assert code == 1, report
    [finding] = [f for f in report["findings"] if f["kind"] == "crash"]
    assert any("loop" in m or "itself" in m for m in finding["mutations"]), finding
    small = Path(finding["minimized"]["reproducer"])
    with TraceReader(small) as reader:
        events = [r.event for r in reader if isinstance(r, EventRecord)]
    assert GUEST_WRITE in events and RING_KICK in events, events
    for repro in (Path(finding["reproducer"]), small):
        status, out = replay_against_planted(tmp_path, repro)
        assert status == -11, (repro, status, out)  # SIGSEGV, as in the fuzz run
        assert "guest memory write(s) and ring kick(s) made as recorded" in out
    # the messages alone do not do it: the chain is in guest memory, the kick is not a message
    bare = without_guest_actions(small, tmp_path / "bare.vht")
    status, out = replay_against_planted(tmp_path, bare)
    assert status is None, out
