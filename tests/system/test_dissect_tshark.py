"""tshark on a real recording: a read-only qemu-storage-daemon export seen through the
Lua dissector, its device feature bits named and filterable by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dissect.conftest import frames, needs_tshark
from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.trace.reader import TraceReader

pytestmark = needs_tshark

Tshark = Callable[..., str]


def filtered(tshark: Tshark, capture: Path, display_filter: str) -> list[int]:
    return frames(tshark(capture, "-Y", display_filter, "-T", "fields", "-e", "frame.number"))


@pytest.mark.lab_needs("qemu", "qsd", "qemu-img", "busybox", "kernel")
def test_a_read_only_disk_filters_by_ro(tshark: Tshark, lab, exported: Callable[..., Path]) -> None:
    """Real QEMU and a writable=off qemu-storage-daemon export: the back-end offers RO
    (virtio-blk bit 5), QEMU takes it; `vhost_user.features.name == "RO"` finds exactly the
    messages vhtrace says carry it, and the tree names bit 5 RO, not Unknown (5)."""
    from vhtrace.lab import VhostUserDevice, guest, images

    image = images.create_image(lab.path("disk.img"), 16 << 20)
    daemon = lab.qsd(image, name="qsd-ro", writable=False)
    front = lab.sock("ro-front")
    recorder = lab.record(front, daemon.socket, name="record-ro")
    initrd = lab.initramfs(guest.read_disk_md5(), devices=("blk",))
    with lab.qemu(initrd, [VhostUserDevice("blk", front)], name="qemu-ro") as vm:
        vm.finish(timeout=120)
    assert recorder.interrupt() == 0
    with TraceReader(recorder.trace) as reader:
        items = list(analyser_for(reader.header).run(reader))
    with_ro = [
        i.record.seq
        for i in items
        if isinstance(i, AnalysedMessage)
        and i.analysis.layout == "virtio_features"
        and i.analysis.fields
        and i.analysis.fields["features"] >> 5 & 1
    ]
    assert len(with_ro) >= 2, "neither the offer nor QEMU's SET_FEATURES carried RO"
    capture = exported(recorder.trace)
    assert filtered(tshark, capture, 'vhost_user.features.name == "RO"') == with_ro
    tree = tshark(capture, "-Y", f"frame.number == {with_ro[0]}", "-V")
    assert "Feature bit: RO (5)" in tree and "Unknown (5)" not in tree
