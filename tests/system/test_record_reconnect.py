"""QEMU with reconnect=1 through vhtrace record, the back-end restarted while the guest runs.

The back-end dies: the recorder records it, closes QEMU's side (as a dead back-end
would), QEMU reconnects, and the next connection is a new session in the same trace.
"""

from __future__ import annotations

import pytest

from tests.system.tracecheck import Trace
from vhtrace.lab import VhostUserDevice, Workspace, guest, images

pytestmark = pytest.mark.system

MiB = 1 << 20


def ticks(vm) -> list[int]:
    return [int(v) for v in vm.markers().all("tick") if v is not None]


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_backend_restart_is_a_new_session(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 16 * MiB)
    images.fill_random(image, 99)
    initrd = lab.initramfs(guest.tick_loop(60, 0.2, device="/dev/vda"), devices=("blk",))
    qsd = lab.qsd(image)
    front = lab.sock("front")
    proxy = lab.record(front, qsd.socket)
    vm = lab.qemu(initrd, [VhostUserDevice("blk", front, reconnect=1)])
    vm.wait_for(lambda m: len(m.all("tick")) >= 5, timeout=90, what="5 ticks")

    qsd.stop()  # the back-end dies while the guest does I/O
    before = max(ticks(vm))
    qsd = lab.qsd(image)  # ... and comes back on the same socket
    vm.wait_for(lambda m: max(int(v or 0) for v in m.all("tick")) >= before + 10, timeout=90,
                what=f"tick {before + 10}: guest I/O goes on after the restart")  # fmt: skip
    markers = vm.finish(timeout=120)
    assert proxy.interrupt() == 0
    assert markers["tick"] == "59"

    trace = Trace.read(proxy.trace)
    assert trace.problem is None, trace.problem
    assert len(trace.sessions()) >= 2, [e.event for e in trace.events()]
    ends = trace.events("session-end")
    assert ends[0].info["reason"] == "backend closed"
    second = trace.sessions()[1]
    resumed = [m for m in trace.named("SET_VRING_KICK") if m.record.session == second]
    assert resumed, "the second session set the ring up again"
    assert [str(f) for f in trace.findings("error")] == []
