"""Scripts against a real QEMU: back-end channel requests and faults QEMU must notice."""

from __future__ import annotations

import pytest

from mockbackend import (
    BlkDevice,
    Message,
    MockBackend,
    Reply,
    Script,
    WrongFlags,
    WrongRequest,
    WrongSize,
    expect,
)
from mockbackend.devices.blk import SECTOR
from vhtrace.lab import QemuError, VhostUserDevice, Workspace, images
from vhtrace.protocol.spec import Channel

MiB = 1 << 20


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel")
def test_config_change_makes_qemu_reread_config_and_the_guest_sees_the_new_size(
    lab: Workspace,
) -> None:
    image = images.create_image(lab.path("disk.img"), 16 * MiB)
    grown = 24 * MiB
    device = BlkDevice(image)
    script = Script(device)
    replies: list[Message | None] = []

    @script.after("SET_VRING_ENABLE")
    def grow_disk(ctx, msg, reply) -> None:
        if msg.fields["num"] == 1 and "sent" not in script.state:
            script.state["sent"] = msg.seq
            device.resize(grown)
            assert ctx.backend is not None, "QEMU did not set up the back-end channel"
            ctx.backend.config_change(need_reply=True).then(replies.append)

    config_reads = expect.Follows("CONFIG_CHANGE_MSG", "GET_CONFIG")
    script.expect(config_reads)

    @script.before("GET_CONFIG")
    def count(ctx, msg) -> None:
        script.state.setdefault("get_config", []).append(msg.seq)

    backend = MockBackend(script).start(lab.sock("mock"))
    want = grown // SECTOR
    snippet = f"""
wait_dev /dev/vda
_n=0
while [ "$(cat /sys/block/vda/size)" != "{want}" ] && [ $_n -lt 100 ]; do
    usleep 100000; _n=$((_n + 1))
done
vht sectors "$(cat /sys/block/vda/size)"
"""
    initrd = lab.initramfs(snippet, devices=("blk",))
    with lab.qemu(initrd, [VhostUserDevice("blk", lab.sock("mock"))]) as vm:
        markers = vm.finish(timeout=120)
    [report] = backend.wait(30)

    assert replies and replies[0] is not None, "QEMU never answered CONFIG_CHANGE_MSG"
    ack = replies[0]
    assert ack.channel is Channel.BACKEND and ack.fields == {"value": 0}, ack
    assert ack.findings == []
    sent_at = script.state["sent"]
    assert any(seq > sent_at for seq in script.state["get_config"]), (
        "no GET_CONFIG after the config change"
    )
    assert report.expectation_failures == []
    assert markers["sectors"] == str(want), "the guest did not see the resized disk"


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel")
@pytest.mark.parametrize(
    ("fault", "qemu_says"),
    [
        (WrongFlags(0x1), "Failed to read msg header. Flags 0x1 instead of 0x5."),
        (WrongRequest("GET_STATUS"), "Received unexpected msg type. Expected 1 received 40"),
        (WrongSize(4), "Received bad msg size."),
    ],
    ids=["flags", "request-id", "size"],
)
def test_wrong_get_features_reply_is_reported_by_qemu(
    lab: Workspace, fault: object, qemu_says: str
) -> None:
    image = images.create_image(lab.path("disk.img"), 4 * MiB)
    script = Script(BlkDevice(image))
    armed = script.fault(fault, on="GET_FEATURES")  # type: ignore[arg-type]
    backend = MockBackend(script).start(lab.sock("mock"))
    initrd = lab.initramfs("wait_dev /dev/vda\n", devices=("blk",))
    vm = lab.qemu(initrd, [VhostUserDevice("blk", lab.sock("mock"))])
    with pytest.raises(QemuError):
        vm.finish(timeout=60)
    backend.stop()
    assert armed.fired
    assert vm.returncode not in (0, None)
    assert qemu_says in vm.log_text()


@pytest.mark.lab_needs("qemu", "qemu-img", "busybox", "kernel")
def test_overridden_reply_is_judged_as_the_mocks_own_finding(lab: Workspace) -> None:
    """A handler override answers GET_VRING_BASE for another ring: QEMU 7.2 lets it pass,
    the conversation flags it among the mock's own findings (not the front-end's)."""
    image = images.create_image(lab.path("disk.img"), 4 * MiB)
    script = Script(BlkDevice(image))

    @script.on("GET_VRING_BASE")
    def wrong_ring(ctx, msg) -> Reply:
        ctx.default(msg)  # stop the ring as usual
        return Reply({"index": msg.fields["index"] + 7, "num": 0})

    backend = MockBackend(script).start(lab.sock("mock"))
    initrd = lab.initramfs("wait_dev /dev/vda\nvht seen\n", devices=("blk",))
    with lab.qemu(initrd, [VhostUserDevice("blk", lab.sock("mock"))]) as vm:
        vm.finish(timeout=60)
    [report] = backend.wait(30)
    assert any(f.code == "reply-mismatch" for f in report.own), report.own
    assert not any(f.code == "reply-mismatch" for f in report.violations)
