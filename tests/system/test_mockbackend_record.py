"""QEMU -> vhtrace record -> mock back-end: the back-end channel traffic the mock's script
starts is in the trace, with the front-end's reply and the GET_CONFIG it causes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mockbackend import BlkDevice, MockBackend, Script, expect
from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.lab import VhostUserDevice, Workspace, guest, images
from vhtrace.lab.recording import RecordingProxy
from vhtrace.trace.reader import TraceReader

MiB = 1 << 20


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel")
def test_backend_channel_requests_of_a_script_are_recorded(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 8 * MiB)
    image_md5 = images.fill_random(image, 5)
    script = Script(BlkDevice(image))
    script.expect(expect.Follows("CONFIG_CHANGE_MSG", "GET_CONFIG"))

    @script.after("SET_VRING_ENABLE")
    def announce(ctx, msg, reply) -> None:
        if msg.fields["num"] == 1 and not script.state.get("sent"):
            script.state["sent"] = True
            ctx.backend.config_change(need_reply=True)

    backend = MockBackend(script).start(lab.sock("mock"))
    trace_path = lab.path("mock.vht")
    recorder = RecordingProxy(
        lab.sock("qemu"),
        lab.sock("mock"),
        trace_path,
        lab.path("record.log"),
        extra_args=("--once",),
    ).start()
    try:
        initrd = lab.initramfs(guest.read_disk_md5(), devices=("blk",))
        with lab.qemu(initrd, [VhostUserDevice("blk", lab.sock("qemu"))]) as vm:
            markers = vm.finish(timeout=120)
        assert recorder.wait(30) == 0, recorder.log_text()
    finally:
        recorder.stop()
    [report] = backend.wait(30)

    assert markers["md5"] == image_md5
    assert report.expectation_failures == []
    with TraceReader(trace_path) as reader:
        items = list(analyser_for(reader.header).run(reader))
        assert reader.problem is None
    messages = [i for i in items if isinstance(i, AnalysedMessage)]
    on_channel = [m for m in messages if m.record.channel == "backend"]
    requests = [m for m in on_channel if m.analysis.role == "request"]
    replies = [m for m in on_channel if m.analysis.role == "reply"]
    assert [m.analysis.name for m in requests] == ["CONFIG_CHANGE_MSG"]
    assert requests[0].record.sender == "backend"
    assert [(m.analysis.name, m.analysis.fields) for m in replies] == [
        ("CONFIG_CHANGE_MSG", {"value": 0})
    ]
    sent_at = requests[0].record.seq
    reread = [
        m
        for m in messages
        if m.analysis.name == "GET_CONFIG" and m.analysis.role == "reply" and m.record.seq > sent_at
    ]
    assert reread, "no GET_CONFIG reply after the config change in the trace"
    # the config space by name: the mock's disk, as QEMU read it again
    assert reread[0].analysis.fields["device_config"]["capacity"] * 512 == image.stat().st_size
    stats = subprocess.run(
        [sys.executable, "-m", "vhtrace.cli.main", "stats", str(trace_path)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"#{sent_at}  the back-end's config changed" in stats
    line = f"#{reread[0].record.seq}  config read: offset 0 size \\d+ writable capacity 8 MiB "
    assert re.search(line, stats), stats  # 8 MiB: the disk made above
    assert [str(f) for m in messages for f in m.analysis.findings if f.severity == "error"] == []
