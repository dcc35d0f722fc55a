"""The mock back-end serving a real Linux guest under QEMU 7.2 (vhost-user-blk)."""

from __future__ import annotations

import hashlib

import pytest

from mockbackend import BlkDevice, MockBackend, Script, expect
from mockbackend.devices.base import PACKED
from vhtrace.lab import VhostUserDevice, Workspace, guest, images
from vhtrace.protocol.spec import VIRTIO_F_RING_PACKED

MiB = 1 << 20
DISK_SIZE = 64 * MiB
SEED = 20241125


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel")
@pytest.mark.parametrize("ring", ["split", "packed"])
def test_guest_reads_and_writes_the_mock_disk(lab: Workspace, ring: str) -> None:
    image = images.create_image(lab.path("disk.img"), DISK_SIZE)
    original_md5 = images.fill_random(image, SEED)
    pattern = b"mockbackend-pattern:" + images.random_bytes(8192 - 20, SEED + 1)
    offset = 21 * MiB + 777  # not sector aligned: the guest reads, modifies, writes

    device = BlkDevice(image)
    options = {}
    if ring == "packed":
        device.features |= PACKED
        options["packed"] = "on"
    script = Script(device)
    script.expect(expect.kick_before_enable())
    script.expect(expect.no_violations())
    backend = MockBackend(script).start(lab.sock("mock"))
    initrd = lab.initramfs(
        guest.read_disk_md5() + guest.write_pattern(pattern, offset), devices=("blk",)
    )
    blk = VhostUserDevice("blk", lab.sock("mock"), device_options=options)
    with lab.qemu(initrd, [blk]) as vm:
        markers = vm.finish(timeout=120)
    reports = backend.wait(30)

    assert markers["md5_size"] == str(DISK_SIZE)
    assert markers["md5"] == original_md5, "the guest read other bytes than the image holds"
    assert markers["pattern_readback_md5"] == md5(pattern)
    data = image.read_bytes()
    assert data[offset : offset + len(pattern)] == pattern, "the pattern did not land in the file"
    expected = bytearray(images.random_bytes(DISK_SIZE, SEED))
    expected[offset : offset + len(pattern)] = pattern
    assert md5(data) == md5(bytes(expected)), "the image changed outside the pattern"

    assert len(reports) == 1
    report = reports[0]
    assert report.expectation_failures == []
    assert report.errors == []
    counts = device.counts
    assert counts.get(0, 0) > 0 and counts.get(1, 0) > 0, counts  # reads and writes
    negotiated = backend.ctx.state.features_acked if backend.ctx else None
    assert negotiated is not None
    assert bool(negotiated >> VIRTIO_F_RING_PACKED & 1) == (ring == "packed")


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel")
def test_mock_connects_to_a_listening_qemu(lab: Workspace) -> None:
    """QEMU's chardev with server=on: the mock back-end is the client (``--connect``)."""
    image = images.create_image(lab.path("disk.img"), 8 * MiB)
    image_md5 = images.fill_random(image, SEED + 2)
    initrd = lab.initramfs(guest.read_disk_md5(), devices=("blk",))
    device = VhostUserDevice("blk", lab.sock("qemu"), server=True)
    with lab.qemu(initrd, [device]) as vm:  # returns once QEMU listens
        backend = MockBackend(Script(BlkDevice(image))).start(lab.sock("qemu"), client=True)
        markers = vm.finish(timeout=120)
    [report] = backend.wait(30)
    assert markers["md5"] == image_md5
    assert report.errors == [] and report.script_errors == [] and report.expectation_failures == []
