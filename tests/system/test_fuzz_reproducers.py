"""The reproducers of what ``vhtrace fuzz`` found in real programs (traces/fuzz/, listed in
docs/fuzzing.md): each still crashes the program it was found in when replayed, and
mockbackend, replaying the same, survives every one of them."""

from __future__ import annotations

import re
import signal
import socket
import struct
from pathlib import Path

import pytest

from vhtrace.fuzz.oracle import normalize, panic_line
from vhtrace.lab import Workspace, images
from vhtrace.lab.dpdk import VhostPmd
from vhtrace.lab.proc import wait_until
from vhtrace.protocol import spec
from vhtrace.protocol.framing import pack_header
from vhtrace.replay import ReplayOptions, replay_frontend
from vhtrace.trace.reader import TraceReader

FOUND = Path(__file__).resolve().parents[2] / "traces" / "fuzz"
IN_REAL_PROGRAMS = sorted(p.name for p in FOUND.glob("*.vht") if not p.name.startswith("mock"))
GET_FEATURES = spec.lookup_request("GET_FEATURES")[1]


def answers_get_features(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(pack_header(GET_FEATURES, spec.VERSION, 0))
        reply = b""
        while len(reply) < spec.HEADER_SIZE + 8:
            chunk = sock.recv(64)
            if not chunk:
                return False
            reply += chunk
    return struct.unpack_from("<I", reply)[0] == GET_FEATURES


def test_every_reproducer_says_what_it_reproduces() -> None:
    assert len(IN_REAL_PROGRAMS) >= 6
    for name in IN_REAL_PROGRAMS:
        with TraceReader(FOUND / name) as reader:
            fuzz = reader.header["fuzz"]
            assert fuzz["signature"].split()[0] in ("crash", "panic", "hang")
            programs = ("qemu-storage-daemon", "virtiofsd", "dpdk-testpmd")
            words = [w.rsplit("/", 1)[-1] for w in fuzz["backend"].split()]
            assert set(programs) & set(words), name


def _program_of(name: str) -> str:
    with TraceReader(FOUND / name) as reader:
        backend = reader.header["fuzz"]["backend"]
    words = {w.rsplit("/", 1)[-1] for w in backend.split()}
    return next(p for p in ("qemu-storage-daemon", "virtiofsd", "dpdk-testpmd") if p in words)


def _start_the_program(lab: Workspace, program: str, name: str):
    if program == "qemu-storage-daemon":
        return lab.qsd(images.create_image(lab.path(f"{name}.img"), 64 << 20), name=name)
    if program == "virtiofsd":
        shared = lab.path(f"{name}-shared")
        shared.mkdir()
        return lab.virtiofsd(shared, name=name)
    return lab.testpmd(VhostPmd(lab.sock(name)), name=name, hugepages=False)


NEEDS = {
    "qemu-storage-daemon": ("qsd", "qemu-img"),
    "virtiofsd": ("virtiofsd",),
    "dpdk-testpmd": ("testpmd", "hugepages"),
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.lab_needs(*NEEDS[_program_of(n)]))
        for n in IN_REAL_PROGRAMS
    ],
)
def test_each_reproducer_still_breaks_the_program_it_was_found_in(
    lab: Workspace, name: str
) -> None:
    """Replayed against a fresh copy of its program, a reproducer does what its header says
    (the signature the fuzzer saw): killed by that signal, that panic text, or a hang (the
    reply owed never comes while the program stays connected: replay waits for it and
    says so). Some races (a heap corruption malloc notices or not, a cut message read
    before or after the hang-up, a queue thread that takes the lock first) need a few
    tries, as the fuzzer's own confirmation does: up to ATTEMPTS."""
    with TraceReader(FOUND / name) as reader:
        signature = reader.header["fuzz"]["signature"]
    seen = []
    for attempt in range(1, ATTEMPTS + 1):
        target = _start_the_program(lab, _program_of(name), f"target{attempt}")
        # a hang's reproducer keeps its recorded gaps (the thread that hangs must be busy)
        realtime = signature.startswith("hang ")
        options = ReplayOptions(timeout=3, close_timeout=1, realtime=realtime)
        result = replay_frontend(FOUND / name, target.socket, options)
        if signature.startswith("hang "):
            owed = signature.partition(" ")[2]
            notes = [n for s in result.sessions for n in s.notes]
            hung = any(n.startswith(f"{owed}: no reply within 3 s") for n in notes)
            if hung and target.alive():
                return
            seen.append(f"alive {target.alive()}, notes {notes}, log {target.log_text()[-200:]!r}")
            target.stop()
            continue
        wait_until(lambda t=target: not t.alive(), 10)
        outcome = _outcome(signature, target.returncode, target.log_text())
        if outcome is None:
            return
        seen.append(outcome)
        target.stop()
    pytest.fail(f"{name}: {signature!r} not reproduced in {ATTEMPTS} tries: {seen}")


ATTEMPTS = 5


def _outcome(signature: str, status: int | None, log: str) -> str | None:
    """None if the run shows ``signature``, else what it showed instead."""
    kind, _, what = signature.partition(" ")
    line = panic_line(log)
    if kind == "crash":
        wanted = what.split(":")[0]
        if status is not None and status < 0 and signal.Signals(-status).name == wanted:
            return None
    elif line is not None and (normalize(line) == what or _heap_check(line) == _heap_check(what)):
        return None
    return f"status {status}, panic {line!r}"


def _heap_check(text: str) -> str | None:
    """glibc's heap checks name the one that caught a corruption ('malloc(): invalid next
    size', '... next->prev_inuse'): which depends on the heap's layout, not on the bug."""
    match = re.match(r"(malloc|free|realloc|double free|corrupted)\b", text)
    return "glibc heap check" if match else None


def _mock(lab: Workspace, name: str):
    disk = images.create_image(lab.path("disk.img"), 16 << 20)
    return lab.mockbackend("--device", "blk", "--disk", disk, "--sessions", "0", "-q", name=name)


@pytest.mark.lab_needs("qemu-img")
@pytest.mark.parametrize("name", IN_REAL_PROGRAMS)
def test_mockbackend_survives_what_crashed_a_real_back_end(lab: Workspace, name: str) -> None:
    mock = _mock(lab, "mock")
    replay_frontend(FOUND / name, mock.socket, ReplayOptions(timeout=3, close_timeout=1))
    assert mock.alive(), mock.log_text()
    assert answers_get_features(mock.socket)
    assert "Traceback" not in mock.log_text()


@pytest.mark.lab_needs("qemu-img")
def test_mockbackend_survives_its_own_reproducer(lab: Workspace) -> None:
    mock = _mock(lab, "mock-own")
    replay_frontend(FOUND / "mockbackend-postcopy-segv.vht", mock.socket,
                    ReplayOptions(timeout=3, close_timeout=1))  # fmt: skip
    try:
        answered = answers_get_features(mock.socket)
    except OSError:
        answered = False  # it died (SIGSEGV) handling the kick, as the probe came
    assert answered and mock.alive(), f"mockbackend gone (status {mock.returncode})"
