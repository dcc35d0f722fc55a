"""A ring mutation's reproducer replays: the descriptor chain the fuzzer wrote into guest
memory and the kick are events of the reproducer, and ``vhtrace replay REPRO --backend``
makes them again, so the planted back-end that follows looping chains into a SIGSEGV
(``planted.py --crash-on-loop``) dies of the replay too; without those events it does not."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from tests.fuzz.test_fuzz_cli import PLANTED, TRACE, VHTRACE, fuzz, planted
from vhtrace.fuzz.campaign import load_template
from vhtrace.fuzz.driver import DriveOptions, Transcript, run_case
from vhtrace.fuzz.mutate import at, field_mutation, mutate_ring, put, spots
from vhtrace.fuzz.repro import write_reproducer
from vhtrace.fuzz.target import Target
from vhtrace.replay.guestwrites import GUEST_WRITE, RING_KICK
from vhtrace.replay.memsource import SnapshotSource
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


def looping_attack_with_a_moved_region(template):  # type: ignore[no-untyped-def]
    """The template's case with a descriptor loop on a ring and the guest-physical address
    of that ring's region moved (``guest_phys_addr`` +0x100000): the back-end finds rings by
    user address, so the chain is still where it looks, but a gpa read through the mutated
    table now names other bytes of the memfd."""
    for seed in range(200):
        case = mutate_ring(random.Random(seed), template, template.case)
        if case is not None and "itself" in case.attacks[0].what:
            break
    else:
        raise AssertionError("no looping attack in 200 seeds")
    spot = next(
        s
        for s in spots(case, lambda m: m.name == "ADD_MEM_REG")
        if (at(case, s).fields() or {}).get("guest_phys_addr") == 0xC0000
    )
    moved = field_mutation(at(case, spot), "guest_phys_addr", 0xC0000 + 0x100000)
    assert moved is not None
    return put(case, spot, [moved], f"moved: {moved.describe()}")


def test_a_ring_attack_replays_into_the_memfd_it_hit_whatever_the_mutated_table_says(
    tmp_path: Path,
) -> None:
    """The fuzzer aims with the recorded region table, the reproducer carries the mutated
    one: its guest writes name the memfd and offset written, so replay writes the same bytes
    (a gpa, read through the mutated table, would land 1 MiB off and crash nothing)."""
    template = load_template(TRACE, None)
    case = looping_attack_with_a_moved_region(template)
    target = Target([sys.executable, str(PLANTED), "--socket", "{sock}", "--crash-on-loop"])
    try:
        target.start()
        transcript = Transcript()
        run = run_case(
            target, case, SnapshotSource.of_trace(TRACE), DriveOptions(timeout=1), transcript
        )
        assert run.exit_status == -11, run  # the fuzz run itself: SIGSEGV on the loop
    finally:
        target.close()
    repro = write_reproducer(tmp_path / "repro.vht", transcript, device="blk", info={})
    with TraceReader(repro) as reader:
        writes = [r.info for r in reader if isinstance(r, EventRecord) and r.event == GUEST_WRITE]
    assert writes and all("gpa" not in w and {"message", "fd", "offset"} <= set(w) for w in writes)
    status, out = replay_against_planted(tmp_path, repro)
    assert status == -11, out
