"""``vhtrace fuzz --frontend-cmd``: mutated back-end replies served to a real QEMU at device
realize, a new QEMU each iteration; every outcome classified, no QEMU left running."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vhtrace.fuzz.oracle import CORRECT_KINDS, FINDING_KINDS
from vhtrace.lab import Workspace
from vhtrace.lab.qemu import realize_only_command

ROOT = Path(__file__).resolve().parents[2]
BLK_TRACE = ROOT / "traces" / "qemu-qsd-blk.vht"
ITERATIONS = 6


def _qemu_command() -> str:
    """QEMU with a vhost-user-blk device on {sock}, paused (-S): realize only, no guest."""
    return shlex.join(realize_only_command())


@pytest.mark.lab_needs("qemu")
def test_fuzz_qemu_as_the_front_end(lab: Workspace) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vhtrace", "fuzz", str(BLK_TRACE), "--frontend-cmd",
         _qemu_command(), "--seed", "1", "--iterations", str(ITERATIONS), "--json",
         "--out", str(lab.path("found"))],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["iterations"] == ITERATIONS
    assert sum(report["outcomes"].values()) == ITERATIONS
    assert set(report["outcomes"]) <= set(FINDING_KINDS + CORRECT_KINDS)
    # seed 1: some mutated replies QEMU accepts (it survives realize), some it refuses
    assert report["outcomes"].get("ok", 0) >= 1
    for finding in report["findings"]:
        assert Path(finding["reproducer"]).exists()
    [sock] = {m for arg in report["frontend"] for m in re.findall(r"path=(/[^,]*\.sock)", arg)}
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if sock.encode() in (entry / "cmdline").read_bytes():
                    leftovers.append(int(entry.name))
            except OSError:
                continue
    assert leftovers == []
