"""Postcopy live migration between two QEMUs, each with a mock back-end on the same disk.

The destination's mock offers PAGEFAULT without CONFIGURE_MEM_SLOTS (QEMU 7.2 breaks
postcopy with it), answers POSTCOPY_ADVISE with a userfaultfd, does the three-way
SET_MEM_TABLE exchange and registers guest memory, so that after the switch the guest
keeps reading its disk through the mock while pages still arrive.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support import scenarios
from vhtrace.lab import Workspace, guest, images
from vhtrace.lab.backends import Backend

MiB = 1 << 20


def mock_backend(lab: Workspace, name: str, image: Path) -> Backend:
    return lab.mockbackend("--device", "blk", "--disk", image, "--postcopy", "-v",
                           "--report", lab.path(f"{name}.json"), name=name)  # fmt: skip


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel", "userfaultfd")
def test_postcopy_migration_with_mock_backends_on_both_sides(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 64 * MiB)
    images.fill_random(image, 99)
    initrd = lab.initramfs(guest.tick_loop(2000, 0.2, device="/dev/vda"), devices=("blk",))
    src_mock = mock_backend(lab, "mock-src", image)
    dst_mock = mock_backend(lab, "mock-dst", image)
    # the guest goes on reading its disk, through the destination's mock, while pages arrive
    migration = scenarios.migrate_guest(lab, initrd, src_mock.socket, dst_mock.socket,
                                        ticks_after=5)  # fmt: skip
    result = migration.result
    assert result.status == "completed", result.info
    assert result.entered_postcopy, result.statuses
    assert result.info["ram"].get("postcopy-requests", 0) > 0, result.info["ram"]
    assert (migration.src_exit, migration.dst_exit) == (0, 0)
    assert dst_mock.wait(30) == 0
    assert src_mock.wait(30) == 0

    dst_log = dst_mock.log_text()
    assert "postcopy: userfaultfd created" in dst_log, dst_log
    registered = re.search(r"postcopy: (\d+) of (\d+) regions registered", dst_log)
    assert registered and registered[1] == registered[2] != "0", dst_log
    assert "postcopy: ended" in dst_log, dst_log
    assert "Failed to read full userfault message" not in migration.dst.log_text()
    [dst_report] = json.loads(lab.path("mock-dst.json").read_text())
    assert dst_report["errors"] == []
    assert not [v for v in dst_report["violations"] if v["severity"] == "error"]
