"""QEMU -> vhtrace record -> mock back-end sending the spec's back-end VRING_CALL (4): real
QEMU 7.2 refuses it (its back-end channel answers any id it lacks with -EINVAL, a u64 1
ack under NEED_REPLY), and the trace says so, knowing from the session-start event that
the front-end was QEMU (issue 16 point 4; spec.QEMU_UNHANDLED_BACKEND_REQUESTS)."""

from __future__ import annotations

import pytest

from mockbackend import BlkDevice, MockBackend, Script
from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.lab import VhostUserDevice, Workspace, guest, images
from vhtrace.lab.recording import RecordingProxy
from vhtrace.protocol.spec import ProtocolFeature as PF
from vhtrace.trace.reader import TraceReader

MiB = 1 << 20


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel")
def test_qemu_refuses_the_backend_vring_call_and_the_trace_flags_it(lab: Workspace) -> None:
    image = images.create_image(lab.path("disk.img"), 8 * MiB)
    images.fill_random(image, 3)
    script = Script(BlkDevice(image))
    # INBAND_NOTIFICATIONS needs BACKEND_REQ and REPLY_ACK, which the mock offers already
    script.protocol_features |= 1 << PF.INBAND_NOTIFICATIONS
    answers: list = []

    @script.after("SET_VRING_ENABLE")
    def notify(ctx, msg, reply) -> None:
        if msg.fields["num"] == 1 and not script.state.get("sent"):
            script.state["sent"] = True
            ctx.backend.vring_call(0).then(answers.append)  # NEED_REPLY: REPLY_ACK is on

    backend = MockBackend(script).start(lab.sock("mock"))
    trace_path = lab.path("inband.vht")
    recorder = RecordingProxy(
        lab.sock("qemu"), lab.sock("mock"), trace_path, lab.path("record.log"),
        extra_args=("--once", "--memory", "none"),
    ).start()  # fmt: skip
    try:
        initrd = lab.initramfs(guest.read_disk_md5(), devices=("blk",))
        with lab.qemu(initrd, [VhostUserDevice("blk", lab.sock("qemu"))], name="qemu") as vm:
            vm.finish(timeout=120)
        assert recorder.wait(30) == 0, recorder.log_text()
    finally:
        recorder.stop()
    backend.wait(30)

    assert answers and answers[0] is not None, "QEMU never answered the back-end VRING_CALL"
    assert answers[0].fields == {"value": 1}, "QEMU acked the back-end VRING_CALL as a success"
    assert "Received unexpected msg type: 4" in lab.path("qemu.log").read_text()

    with TraceReader(trace_path) as reader:
        items = list(analyser_for(reader.header).run(reader))
    messages = [i for i in items if isinstance(i, AnalysedMessage)]
    call = next(
        m for m in messages if m.record.channel == "backend" and m.analysis.role == "request"
    )
    assert call.analysis.name == "VRING_CALL"
    assert [f.code for f in call.analysis.findings] == ["frontend-unsupported"]
    ack = next(m for m in messages if m.record.channel == "backend" and m.analysis.role == "reply")
    assert [f.code for f in ack.analysis.findings] == ["reply-failure"]
