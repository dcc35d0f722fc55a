"""The reproducers of what ``vhtrace fuzz`` found in real programs (traces/fuzz/, listed in
docs/fuzzing.md), replayed against mockbackend, which must survive every one of them."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from vhtrace.lab import Workspace, images
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
            assert fuzz["signature"].split()[0] in ("crash", "panic")
            programs = ("qemu-storage-daemon", "virtiofsd", "dpdk-testpmd")
            words = [w.rsplit("/", 1)[-1] for w in fuzz["backend"].split()]
            assert set(programs) & set(words), name


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
