"""vhtrace diff over sessions recorded from real QEMU and qemu-storage-daemon.

Two boots of the same setup say the same (the addresses and ring positions that differ
between runs do not count); a read-only export is the one difference a user would look
for: the back-end offers RO, and QEMU takes it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vhtrace.lab import VhostUserDevice, Workspace, guest, images

MiB = 1 << 20


def _boot(lab: Workspace, image: Path, name: str, *, writable: bool = True) -> Path:
    """One guest boot reading the disk, through the recorder: the trace."""
    daemon = lab.qsd(image, name=f"qsd-{name}", writable=writable)
    front = lab.sock(f"{name}-front")
    recorder = lab.record(front, daemon.socket, name=f"record-{name}")
    initrd = lab.initramfs(guest.read_disk_md5(), devices=("blk",))
    with lab.qemu(initrd, [VhostUserDevice("blk", front)], name=f"qemu-{name}") as vm:
        markers = vm.finish(timeout=120)
    assert markers["md5_size"] == str(image.stat().st_size)
    assert recorder.interrupt() == 0
    return recorder.trace


def _diff(*args: object) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vhtrace.cli.main", "diff", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_diff_of_real_sessions(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 16 * MiB)
    images.fill_random(image, 7)
    first = _boot(lab, image, "first")
    again = _boot(lab, image, "again")
    readonly = _boot(lab, image, "ro", writable=False)

    same = _diff(first, again)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "result: same (0 changed, 0 added, 0 removed)" in same.stdout

    changed = _diff(first, readonly)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    lines = changed.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith("GET_FEATURES reply"))
    assert "new sets RO (bit 5), which the old trace has not" in lines[at + 2]
    assert any("SET_FEATURES" in line for line in lines), "QEMU took the RO bit"
