"""Reconnection: the mock back-end dies with a request in flight, restarts, and QEMU
(``reconnect=1``) resumes; the in-flight area makes the new back-end redo the request."""

from __future__ import annotations

import sys

import pytest

from vhtrace.lab import VhostUserDevice, Workspace, guest, images
from vhtrace.lab.backends import Backend

MiB = 1 << 20
SEED = 7

CRASHING_SCRIPT = """
import os, signal

def configure(script):
    device = script.device
    handle = device.handle
    seen = {"reads": 0}

    def crash_on_20th_read(queue, chain, mem):
        # A read popped from the ring (so marked in flight) and never answered.
        header = mem.read(chain.readable[0].addr, 4)
        if header == bytes(4):
            seen["reads"] += 1
            if seen["reads"] == 20:
                os.kill(os.getpid(), signal.SIGKILL)
        return handle(queue, chain, mem)

    device.handle = crash_on_20th_read
"""


def mock_backend(lab: Workspace, name: str, image, script=None) -> Backend:
    argv = [
        sys.executable,
        "-m",
        "mockbackend.cli",
        "--socket",
        lab.sock("mock"),
        "--device",
        "blk",
        "--disk",
        image,
        "-v",
        "--sessions",
        "0",
    ]
    if script is not None:
        argv += ["--script", script]
    backend = Backend(argv, lab.sock("mock"), lab.path(f"{name}.log"), name=name)
    return backend.start()


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel")
def test_qemu_reconnects_and_in_flight_io_is_resubmitted(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 16 * MiB)
    original_md5 = images.fill_random(image, SEED)
    script = lab.path("crash.py")
    script.write_text(CRASHING_SCRIPT)

    first = mock_backend(lab, "mock-first", image, script)
    initrd = lab.initramfs(guest.read_disk_md5(), devices=("blk",))
    device = VhostUserDevice("blk", lab.sock("mock"), reconnect=1)
    with lab.qemu(initrd, [device]) as vm:
        first.wait(60)  # killed by its own script, mid-read
        assert first.returncode == -9, first.log_text()
        second = mock_backend(lab, "mock-second", image)
        markers = vm.finish(timeout=120)
    second.stop()

    assert markers["md5"] == original_md5, "the guest read wrong bytes across the reconnect"
    log = second.log_text()
    assert "1 requests in flight resubmitted" in log, log
