"""vhtrace record on a machine whose every CPU is busy, between real QEMU and real
qemu-storage-daemon, a guest doing real work on the device.

The recorder's process runs SCHED_IDLE (it never delays the relay) and is raised while
it is behind and waiting for a CPU (``--recorder-priority auto``). Here, next to a busy
loop per CPU, the guest binds and unbinds its virtio-blk driver (each time the ring
stops and starts again: a dozen messages and two ring snapshots), and the recorder is
raised whenever it falls behind (in most runs it does, at the boot; whether it does
depends on the scheduler, so it is not asserted here). The guest must not notice, and
a recorder killed 1 s after QEMU exited must have written the whole session.

(At real QEMU's pace under TCG, a dozen messages per cycle, a SCHED_IDLE recorder never
raised keeps up too; the stream in tests/record/test_priority.py is what it cannot, and
that test checks the raise itself.)
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.load import busy_loops
from tests.support.tracecheck import Trace
from vhtrace.lab import Workspace, guest, images
from vhtrace.lab.qemu import VhostUserDevice
from vhtrace.record.priority import may_raise
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import SnapshotRecord

MiB = 1 << 20
CYCLES = 60
KILL_AFTER = 1.0
"""Seconds after QEMU's exit, with the busy loops still running."""

REBIND = f"""
wait_dev /dev/vda
_dev=$(basename "$(readlink -f /sys/block/vda/device)")
_drv=/sys/bus/virtio/drivers/virtio_blk
_i=0
while [ $_i -lt {CYCLES} ]; do
  echo "$_dev" > $_drv/unbind
  echo "$_dev" > $_drv/bind
  _i=$((_i + 1))
done
wait_dev /dev/vda
vht cycles $_i
"""


@pytest.mark.skipif(not may_raise(), reason="needs CAP_SYS_NICE or RLIMIT_NICE to raise it")
@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_a_recorder_killed_next_to_a_busy_loop_per_cpu_has_the_whole_session(
    lab: Workspace,
) -> None:
    image = images.create_image(lab.path("disk.img"), 16 * MiB)
    initrd = lab.initramfs(REBIND + guest.read_disk_md5(), devices=("blk",))
    image_md5 = images.fill_random(image, 77)
    qsd = lab.qsd(image)
    front = lab.sock("front")
    proxy = lab.record(front, qsd.socket, name="busy")
    with busy_loops():
        with lab.qemu(initrd, [VhostUserDevice("blk", front)]) as vm:
            markers = vm.finish(timeout=240)
        assert markers["cycles"] == str(CYCLES) and markers["md5"] == image_md5
        # QEMU has powered off: all it sent was relayed. The recorder, still next to the
        # busy loops, is killed with the relay: no clean stop, what is written is the trace.
        time.sleep(KILL_AFTER)
        assert proxy.process.proc is not None
        os.killpg(proxy.process.proc.pid, signal.SIGKILL)
        proxy.process.wait_exit(10)
    qsd.stop()

    trace = Trace.read(proxy.trace)
    starts = trace.named("SET_VRING_KICK")
    stops = trace.named("GET_VRING_BASE", role="reply")
    # The boot starts the ring once, each cycle stops and starts it, power-off stops it.
    assert len(starts) >= CYCLES + 1 and len(stops) >= CYCLES + 1, (
        f"{len(starts)} ring starts and {len(stops)} stops in the trace of a recorder killed "
        f"{KILL_AFTER} s after QEMU exited (the guest made {CYCLES} cycles): it was starved"
    )
    assert trace.events("session-end"), "QEMU's hang-up was not written"
    with TraceReader(proxy.trace) as reader:
        snapshots = [r.trigger for r in reader if isinstance(r, SnapshotRecord)]
    assert snapshots.count("stop") >= CYCLES + 1, snapshots
