"""``vhtrace fuzz`` against a real qemu-storage-daemon (the lab's command line), with the
shipped trace: a fixed number of iterations, every outcome classified, nothing left running."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vhtrace.fuzz.oracle import CORRECT_KINDS, FINDING_KINDS
from vhtrace.fuzz.target import templated
from vhtrace.lab import Workspace, images
from vhtrace.lab.backends import qsd_command
from vhtrace.trace.reader import TraceReader

ROOT = Path(__file__).resolve().parents[2]
BLK_TRACE = ROOT / "traces" / "qemu-qsd-blk.vht"
ITERATIONS = 120


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.lab_needs("qsd", "qemu-img")
def test_fuzz_qemu_storage_daemon(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 64 << 20)  # the trace's disk
    placeholder = lab.sock("fuzz-target")
    command = templated(qsd_command(image, placeholder), placeholder)
    out = lab.path("found")
    done = subprocess.run(
        [sys.executable, "-m", "vhtrace", "fuzz", str(BLK_TRACE), "--backend-cmd", command,
         "--seed", "1", "--iterations", str(ITERATIONS), "--json", "-q", "--out", str(out),
         "--minimize-tests", "25", "--timeout", "3"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["iterations"] == ITERATIONS
    assert sum(report["outcomes"].values()) == ITERATIONS
    assert set(report["outcomes"]) <= set(FINDING_KINDS + CORRECT_KINDS)
    assert report["baseline"].startswith("ok"), report["baseline"]  # the unmutated trace
    assert report["outcomes"].get("ok", 0) > 0 and report["outcomes"].get("disconnect", 0) > 0
    assert (done.returncode == 1) == bool(report["findings"])
    for finding in report["findings"]:
        assert finding["kind"] in FINDING_KINDS
        with TraceReader(finding["reproducer"]) as reader:
            assert reader.header["fuzz"]["signature"] == finding["signature"]
    crashes = [f for f in report["findings"] if f["kind"] == "crash"]
    # the daemon died and was started again, once per death at least
    assert report["backend_starts"] >= 1 + sum(f["count"] for f in crashes)
    [sock] = {m for arg in report["backend"] for m in re.findall(r"/[^,=]*backend\.sock", arg)}
    assert _processes_mentioning(sock) == []


@pytest.mark.lab_needs("qsd", "qemu-img")
def test_ring_attacks_reach_qemu_storage_daemon(lab: Workspace) -> None:
    """Malformed chains in the memory handed out, the ring kicked: the daemon walks them
    and hangs up on them (libvhost-user's vu_panic: looped descriptor, next past the queue
    size...), where the unmutated trace goes through."""
    image = images.create_image(lab.path("disk.img"), 64 << 20)
    placeholder = lab.sock("fuzz-ring")
    command = templated(qsd_command(image, placeholder), placeholder)
    done = subprocess.run(
        [sys.executable, "-m", "vhtrace", "fuzz", str(BLK_TRACE), "--backend-cmd", command,
         "--seed", "3", "--iterations", "60", "--mutate", "ring", "--json", "-q",
         "--out", str(lab.path("found")), "--minimize-tests", "10"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["baseline"].startswith("ok")
    assert report["iterations"] == 60
    assert report["outcomes"].get("disconnect", 0) >= 10, report["outcomes"]
