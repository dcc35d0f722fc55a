"""vhtrace show --follow on the trace a recorder writes while a real guest runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli.test_show import SHOW, _lines_of
from vhtrace.lab import VhostUserDevice, Workspace, guest, images

MiB = 1 << 20


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_follow_a_live_recording(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 16 * MiB)
    images.fill_random(image, 3)
    daemon = lab.qsd(image)
    front = lab.sock("front")
    recorder = lab.record(front, daemon.socket)
    follower = subprocess.Popen(
        [*SHOW, "--follow", str(recorder.trace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines_of(follower)
        initrd = lab.initramfs(guest.read_disk_md5(), devices=("blk",))
        with lab.qemu(initrd, [VhostUserDevice("blk", front)]) as vm:
            # QEMU's first request reaches the follower while the session goes on
            seen = []
            while not any("GET_FEATURES" in line for line in seen):
                line = lines.get(timeout=60)
                assert line is not None, "the follower stopped early"
                seen.append(line)
            assert recorder.alive() and follower.poll() is None
            markers = vm.finish(timeout=120)
        assert markers["md5_size"] == str(image.stat().st_size)
        assert recorder.interrupt() == 0  # the recorder writes its end record ...
        assert follower.wait(timeout=30) == 0  # ... and the follower ends with it
        while (line := lines.get(timeout=10)) is not None:
            seen.append(line)
    finally:
        if follower.poll() is None:
            follower.kill()
    whole = subprocess.run(
        [sys.executable, "-m", "vhtrace.cli.main", "show", str(recorder.trace)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "".join(seen) == whole.stdout
