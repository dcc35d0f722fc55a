"""scripts/guest, as the README tells a user to run it: build a guest, paste the command.

The printed QEMU command line boots for real against qemu-storage-daemon, the guest's
snippet sees the disk, and the guest powers off by itself.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vhtrace.lab import Workspace, images

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "guest"


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_the_printed_command_boots_a_guest_that_sees_the_disk(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 8 << 20)
    daemon = lab.qsd(image)
    snippet = "wait_dev /dev/vda; echo GUEST-SEES-$(cat /sys/block/vda/size)-SECTORS"
    built = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "blk", "--socket", str(daemon.socket),
         "--run", snippet, "--out", str(lab.path("guest"))],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    argv = shlex.split(built.stdout.strip())
    assert argv[0].endswith("qemu-system-x86_64") and "vhost-user-blk-pci" in built.stdout
    booted = subprocess.run(argv, capture_output=True, text=True, timeout=180,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    assert booted.returncode == 0, booted.stdout[-2000:] + booted.stderr[-2000:]
    assert f"GUEST-SEES-{(8 << 20) // 512}-SECTORS" in booted.stdout, booted.stdout[-2000:]


def test_more_sockets_than_devices_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--socket", "a.sock", "--socket", "b.sock"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "2 --socket for 1 --device" in done.stderr
