"""Postcopy live migration between two QEMUs, each through its own vhtrace record.

The destination's trace must hold POSTCOPY_ADVISE with the back-end's userfaultfd, the
postcopy memory-table exchange (the back-end's reply and the front-end's ack, whatever
shape QEMU uses), POSTCOPY_LISTEN and POSTCOPY_END.
"""

from __future__ import annotations

import pytest

from tests.system.tracecheck import Trace
from vhtrace.lab import QmpClient, VhostUserDevice, Workspace, guest, images, postcopy_migrate

pytestmark = pytest.mark.system

MiB = 1 << 20


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel", "userfaultfd")
def test_postcopy_through_two_recorders(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 16 * MiB)
    images.fill_random(image, 5)
    # No disk I/O after the switch: QEMU 7.2's destination device breaks in postcopy
    # (see real-stack.md); the guest only counts, which proves it runs on.
    initrd = lab.initramfs(guest.tick_loop(2000, 0.2, device=None), devices=("blk",))
    src_qsd = lab.qsd(image, name="qsd-src", locking=False)
    dst_qsd = lab.qsd(image, name="qsd-dst", locking=False)
    src_front, dst_front = lab.sock("src-front"), lab.sock("dst-front")
    src_rec = lab.record(src_front, src_qsd.socket, name="rec-src")
    dst_rec = lab.record(dst_front, dst_qsd.socket, name="rec-dst")
    src = lab.qemu(initrd, [VhostUserDevice("blk", src_front)], name="src", qmp=True)
    dst = lab.qemu(initrd, [VhostUserDevice("blk", dst_front)], name="dst", qmp=True,
                   incoming_defer=True)  # fmt: skip
    src.wait_marker("tick", timeout=90)
    assert src.config.qmp is not None and dst.config.qmp is not None
    with QmpClient(src.config.qmp).connect() as src_qmp, \
            QmpClient(dst.config.qmp).connect() as dst_qmp:  # fmt: skip
        result = postcopy_migrate(src_qmp, dst_qmp, f"unix:{lab.sock('mig')}", timeout=180)
        assert result.status == "completed", result.info
        assert result.entered_postcopy, result.statuses
        last = max(int(v or -1) for v in src.markers().all("tick"))
        dst.wait_for(lambda m: any(int(v or -1) > last + 1 for v in m.all("tick")), timeout=60,
                     what="the guest runs on at the destination")  # fmt: skip
        for client in (src_qmp, dst_qmp):
            client.execute("quit")
    src.wait(30)
    dst.wait(30)
    assert dst_rec.interrupt() == 0
    assert src_rec.interrupt() == 0

    trace = Trace.read(dst_rec.trace)
    assert trace.problem is None, trace.problem
    advise = trace.named("POSTCOPY_ADVISE", role="reply")
    assert advise, "no POSTCOPY_ADVISE reply"
    assert advise[0].record.fds and advise[0].record.fds[0]["kind"] == "userfaultfd"
    assert advise[0].wire.size == 0
    listen = trace.named("POSTCOPY_LISTEN")
    assert listen
    # The memory-table exchange after LISTEN: requests, the back-end's replies carrying its
    # own addresses, and the front-end's ack, paired as such (not as new requests).
    after = [m for m in trace.messages if m.record.seq > listen[0].record.seq]
    table = [m for m in after if m.analysis.name in ("SET_MEM_TABLE", "ADD_MEM_REG")]
    replies = [m for m in table if m.analysis.role == "reply"]
    acks = [m for m in table if m.analysis.role == "postcopy-ack"]
    assert replies, [(m.analysis.name, m.analysis.role) for m in table]
    assert acks, [(m.analysis.name, m.analysis.role) for m in table]
    assert all(r.analysis.answers is not None for r in replies)
    if table[0].analysis.name == "ADD_MEM_REG":
        # QEMU 7.2 + libvhost-user with CONFIGURE_MEM_SLOTS: the back-end takes the ack
        # for a region without its fd and panics, so POSTCOPY_END never comes (the known
        # bug this trace is for). The trace shows that, and the recorder flagged it.
        assert "ADD_MEM_REG received 0 fds" in dst_qsd.log_text()
        assert trace.events("session-end")[0].info["reason"] == "backend closed"
        assert any(f.code == "postcopy-mem-slots" for f in trace.findings())
    else:
        assert trace.named("POSTCOPY_END"), "no POSTCOPY_END"
    src_trace = Trace.read(src_rec.trace)
    assert src_trace.named("SET_LOG_BASE"), "the source logs dirty pages for migration"
