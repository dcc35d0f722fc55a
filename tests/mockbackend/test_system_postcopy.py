"""Postcopy live migration between two QEMUs, each with a mock back-end on the same disk.

The destination's mock offers PAGEFAULT without CONFIGURE_MEM_SLOTS (QEMU 7.2 breaks
postcopy with it), answers POSTCOPY_ADVISE with a userfaultfd, does the three-way
SET_MEM_TABLE exchange and registers guest memory, so that after the switch the guest
keeps reading its disk through the mock while pages still arrive.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from vhtrace.lab import QmpClient, VhostUserDevice, Workspace, guest, images, postcopy_migrate
from vhtrace.lab.backends import Backend

pytestmark = pytest.mark.system

MiB = 1 << 20


def mock_backend(lab: Workspace, name: str, image, *extra: str) -> Backend:
    argv = [
        sys.executable,
        "-m",
        "mockbackend.cli",
        "--socket",
        lab.sock(name),
        "--device",
        "blk",
        "--disk",
        image,
        "-v",
        "--report",
        lab.path(f"{name}.json"),
        *extra,
    ]
    return Backend(argv, lab.sock(name), lab.path(f"{name}.log"), name=name).start()


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel", "userfaultfd")
def test_postcopy_migration_with_mock_backends_on_both_sides(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 64 * MiB)
    images.fill_random(image, 99)
    initrd = lab.initramfs(guest.tick_loop(2000, 0.2, device="/dev/vda"), devices=("blk",))
    src_mock = mock_backend(lab, "mock-src", image, "--postcopy")
    dst_mock = mock_backend(lab, "mock-dst", image, "--postcopy")
    src = lab.qemu(initrd, [VhostUserDevice("blk", src_mock.socket)], name="src", qmp=True)
    dst = lab.qemu(
        initrd,
        [VhostUserDevice("blk", dst_mock.socket)],
        name="dst",
        qmp=True,
        incoming_defer=True,
    )
    assert src.config.qmp is not None and dst.config.qmp is not None
    src.wait_marker("tick", timeout=90)

    with (
        QmpClient(src.config.qmp).connect() as src_qmp,
        QmpClient(dst.config.qmp).connect() as dst_qmp,
    ):
        result = postcopy_migrate(src_qmp, dst_qmp, f"unix:{lab.sock('migration')}", timeout=180)
        assert result.status == "completed", result.info
        assert result.entered_postcopy, result.statuses
        assert result.info["ram"].get("postcopy-requests", 0) > 0, result.info["ram"]
        last_on_src = max(int(v or -1) for v in src.markers().all("tick"))
        dst.wait_for(
            lambda m: any(int(v or -1) > last_on_src + 5 for v in m.all("tick")),
            timeout=60,
            what=f"VHT:tick > {last_on_src + 5} on the destination",
        )
        for client in (src_qmp, dst_qmp):
            client.execute("quit")
    assert src.wait(30) == 0
    assert dst.wait(30) == 0
    assert dst_mock.wait(30) == 0
    assert src_mock.wait(30) == 0

    dst_log = dst_mock.log_text()
    assert "postcopy: userfaultfd created" in dst_log, dst_log
    registered = re.search(r"postcopy: (\d+) of (\d+) regions registered", dst_log)
    assert registered and registered[1] == registered[2] != "0", dst_log
    assert "postcopy: ended" in dst_log, dst_log
    assert "Failed to read full userfault message" not in dst.log_text()
    [dst_report] = json.loads(lab.path("mock-dst.json").read_text())
    assert dst_report["errors"] == []
    assert not [v for v in dst_report["violations"] if v["severity"] == "error"]
