"""vhtrace record between real QEMU and virtiofsd: a guest mounts virtio-fs and uses it."""

from __future__ import annotations

import hashlib

import pytest

from tests.system.tracecheck import Trace
from vhtrace.lab import VhostUserDevice, Workspace, guest, images

pytestmark = pytest.mark.system


@pytest.mark.lab_needs("qemu", "virtiofsd", "busybox", "kernel")
def test_virtiofs_through_the_recorder(lab: Workspace) -> None:
    share = lab.path("share")
    share.mkdir()
    host_content = b"from the host, through the proxy\n" + images.random_bytes(500, 7)
    (share / "host.bin").write_bytes(host_content)
    guest_content = b"from the guest\n" + images.random_bytes(300, 8)
    initrd = lab.initramfs(
        guest.virtiofs_roundtrip("host.bin", "guest.bin", guest_content, tag="share"),
        devices=("fs",),
    )
    vfs = lab.virtiofsd(share)
    front = lab.sock("front")
    proxy = lab.record(front, vfs.socket, extra_args=("--once",))
    with lab.qemu(initrd, [VhostUserDevice("fs", front, tag="share")]) as vm:
        markers = vm.finish(timeout=120)
    assert proxy.wait(30) == 0  # --once: the recorder ends with the session

    assert markers["fs_read_md5"] == hashlib.md5(host_content).hexdigest()
    assert (share / "guest.bin").read_bytes() == guest_content

    trace = Trace.read(proxy.trace)
    assert trace.problem is None, trace.problem
    start = trace.events("session-start")[0]
    assert start.info.get("device") == "fs"
    assert "virtiofsd" in start.info["backend"].get("program", "")
    assert trace.named("SET_MEM_TABLE") or trace.named("ADD_MEM_REG")
    kicks = trace.named("SET_VRING_KICK")
    assert len(kicks) >= 2, "virtio-fs has a hiprio and at least one request queue"
    assert {m.analysis.fields["index"] for m in kicks} >= {0, 1}
    assert [str(f) for f in trace.findings("error")] == []
