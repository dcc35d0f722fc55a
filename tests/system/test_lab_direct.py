"""The real stack without any proxy: QEMU talks straight to QSD / virtiofsd.

These establish the baseline the proxy acceptance tests compare against: if one of these
fails, the machine (not the proxy) is at fault. Expected values are always computed from
data generated here, never written down.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from tests.support import scenarios
from vhtrace.lab import (
    BackendError,
    QemuError,
    VhostUserDevice,
    Workspace,
    guest,
    images,
)
from vhtrace.lab.cpio import NewcWriter
from vhtrace.lab.proc import RepeatFolder

MiB = 1 << 20
DISK_SIZE = 64 * MiB
DISK_SEED = 20240601


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def first_difference(a: bytes, b: bytes) -> int | None:
    """Offset of the first differing byte (or of the shorter end), None if equal."""
    if a == b:
        return None
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


# --------------------------------------------------------------------------- (a) blk


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_blk_guest_reads_image_and_writes_land_in_it(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), DISK_SIZE)
    original_md5 = images.fill_random(image, DISK_SEED)
    pattern = b"vhtrace-lab-pattern:" + images.random_bytes(4096 - 20, DISK_SEED + 1)
    offset = 37 * MiB + 1234  # not sector aligned: the guest kernel must read-modify-write

    initrd = lab.initramfs(
        guest.read_disk_md5() + guest.write_pattern(pattern, offset), devices=("blk",)
    )
    qsd = lab.qsd(image)
    with lab.qemu(initrd, [VhostUserDevice("blk", qsd.socket)]) as vm:
        markers = vm.finish(timeout=120)
    qsd.stop()

    assert markers["md5_size"] == str(DISK_SIZE)
    assert markers["md5"] == original_md5, "guest read different bytes than the image holds"
    assert markers["pattern_md5"] == md5(pattern)
    assert markers["pattern_readback_md5"] == md5(pattern)

    data = image.read_bytes()
    landed = data[offset : offset + len(pattern)]
    assert first_difference(landed, pattern) is None, (
        f"pattern differs on the host at +{first_difference(landed, pattern)}"
    )
    expected = bytearray(images.random_bytes(DISK_SIZE, DISK_SEED))
    expected[offset : offset + len(pattern)] = pattern
    assert md5(data) == md5(bytes(expected)), (
        f"image changed outside the pattern, first at {first_difference(data, bytes(expected))}"
    )


# --------------------------------------------------------------------------- (b) fs


@pytest.mark.lab_needs("qemu", "virtiofsd", "busybox", "kernel")
def test_virtiofs_guest_reads_and_writes_host_files(lab: Workspace) -> None:
    share = lab.path("share")
    share.mkdir()
    host_content = b"written by the host\n" + images.random_bytes(300, 11)
    (share / "from-host.bin").write_bytes(host_content)
    guest_content = b"written by the guest\n" + images.random_bytes(200, 12)

    initrd = lab.initramfs(
        guest.virtiofs_roundtrip("from-host.bin", "from-guest.bin", guest_content, tag="share"),
        devices=("fs",),
    )
    vfs = lab.virtiofsd(share)
    with lab.qemu(initrd, [VhostUserDevice("fs", vfs.socket, tag="share")]) as vm:
        markers = vm.finish(timeout=120)

    assert markers["fs_read_md5"] == md5(host_content)
    assert bytes.fromhex(markers["fs_read_hex"] or "") == host_content
    assert markers["fs_write_md5"] == md5(guest_content)
    written = share / "from-guest.bin"
    assert written.exists(), f"guest file missing on the host; share holds {list(share.iterdir())}"
    assert written.read_bytes() == guest_content


# --------------------------------------------------------------------------- (c) postcopy


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel", "userfaultfd")
def test_postcopy_migration_between_two_qemus_completes(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), DISK_SIZE)
    images.fill_random(image, DISK_SEED)
    # The guest only counts: on QEMU 7.2 the destination's vhost-user-blk device breaks
    # during postcopy (QSD: "VHOST_USER_ADD_MEM_REG received 0 fds"), so it must not
    # depend on disk I/O after the switch to prove that it runs on.
    initrd = lab.initramfs(guest.tick_loop(2000, 0.2, device=None), devices=("blk",))
    src_qsd = lab.qsd(image, name="qsd-src", locking=False)
    dst_qsd = lab.qsd(image, name="qsd-dst", locking=False)
    migration = scenarios.migrate_guest(lab, initrd, src_qsd.socket, dst_qsd.socket)

    result = migration.result
    assert result.status == "completed", result.info
    assert result.postcopy_started, result.notes
    assert result.entered_postcopy, result.statuses
    assert result.info["ram"].get("postcopy-bytes", 1) > 0, result.info
    assert migration.src_status["status"] == "postmigrate"
    assert migration.dst_status["running"] is True
    # (migrate_guest waited for the guest's counter to carry on at the destination)
    assert (migration.src_exit, migration.dst_exit) == (0, 0)


# --------------------------------------------------------------------------- the harness itself


@pytest.mark.lab_needs("qemu", "busybox", "kernel")
def test_failing_guest_snippet_is_reported(lab: Workspace) -> None:
    initrd = lab.initramfs("vht before_failure\nfalse\nvht after_failure\n", devices=())
    with lab.qemu(initrd) as vm, pytest.raises(QemuError, match="status 1") as caught:
        vm.finish(timeout=120)
    markers = vm.markers()
    assert "before_failure" in markers
    assert "after_failure" not in markers
    assert "VHT:rc=1" in str(caught.value)  # the log tail is quoted in the error


@pytest.mark.lab_needs("qsd")
def test_backend_that_cannot_start_reports_its_stderr(lab: Workspace) -> None:
    with pytest.raises(BackendError) as caught:
        lab.qsd(lab.path("does-not-exist.img"))
    message = str(caught.value)
    assert "exited before listening" in message
    assert "does-not-exist.img" in message
    assert "No such file" in message  # QSD's own words, from its log


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not found (apt-get install cpio)")
def test_newc_archive_is_readable_by_cpio(tmp_path) -> None:
    archive = tmp_path / "a.cpio"
    with archive.open("wb") as f:
        cpio = NewcWriter(f)
        cpio.directory("d")
        cpio.file("d/f.bin", b"\x00\x01abc", perm=0o640)
        cpio.symlink("d/link", "f.bin")
        cpio.file("top", b"x" * 5)
        cpio.close()
    listing = subprocess.run(
        ["cpio", "-it", "--quiet"], input=archive.read_bytes(), capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == ["d", "d/f.bin", "d/link", "top"]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["cpio", "-id", "--quiet", "--no-absolute-filenames"],
        input=archive.read_bytes(),
        cwd=out,
        check=True,
    )
    assert (out / "d/f.bin").read_bytes() == b"\x00\x01abc"
    assert (out / "d/link").readlink().as_posix() == "f.bin"
    assert (out / "top").read_bytes() == b"xxxxx"


def test_markers_survive_console_noise() -> None:
    text = (
        "\x1b[2JBooting from ROM..\x1b[2JVHT:booted=1.5\r\n"
        "qemu-system-x86_64: some error VHT:tick=9\r\n"
        "VHT:tick=10\r\nVHT:flag\r\nVHT:done\r\n"
    )
    markers = guest.parse_markers(text)
    assert markers["booted"] == "1.5"
    assert markers.all("tick") == ["9", "10"]
    assert markers["flag"] is None
    assert markers.done


def test_repeated_stderr_lines_are_folded(tmp_path) -> None:
    log = tmp_path / "fold.log"
    read_end, write_end = os.pipe()
    folder = RepeatFolder(read_end, log)
    folder.start()
    with os.fdopen(write_end, "wb") as w:
        w.write(b"first\n" + b"flood\n" * 1000 + b"last")
    folder.join(5)
    assert log.read_text().splitlines() == [
        "first",
        "flood",
        "[vhtrace.lab: previous line repeated 999 more times]",
        "last",
    ]
