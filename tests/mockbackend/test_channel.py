"""The back-end channel: requests the mock sends, the front-end's replies."""

from __future__ import annotations

import socket

from mockbackend import BlkDevice, Script
from mockbackend.testing import FakeFrontend
from vhtrace import wire
from vhtrace.protocol import spec
from vhtrace.protocol.messages import build


def test_backend_channel_requests_and_the_front_ends_replies(image) -> None:
    script = Script(BlkDevice(image))
    pending = []

    @script.after("SET_FEATURES")
    def send_requests(ctx, msg, reply) -> None:
        pending.append(ctx.backend.config_change())
        pending.append(ctx.backend.iotlb_miss(0x1000))
        pending.append(ctx.backend.vring_call(0))

    fe = FakeFrontend(script)
    ours, theirs = socket.socketpair()
    fe.ask("GET_FEATURES")
    fe.ask("GET_PROTOCOL_FEATURES")
    fe.send("SET_PROTOCOL_FEATURES", {"features": script.protocol_features})
    fe.ask("SET_BACKEND_REQ_FD", fds=(theirs.fileno(),), need_reply=True)
    theirs.close()
    fe.send("SET_FEATURES", {"features": script.features})
    reader = wire.MessageReader(ours)
    got = [reader.read() for _ in range(3)]
    assert [f.request for f in got if f] == [2, 1, 4]
    assert all(f.flags == spec.VERSION | spec.FLAG_NEED_REPLY for f in got if f)
    wire.send_frame(
        ours,
        build(
            "CONFIG_CHANGE_MSG",
            {"value": 0},
            channel=spec.Channel.BACKEND,
            reply=True,
            layout="ack",
        ),
    )
    bad = build("IOTLB_MSG", {"value": 0}, channel=spec.Channel.BACKEND, reply=True, layout="ack")
    wire.send_frame(ours, bad.__class__(bad.request, 0x1, 8, bad.payload))  # flags wrong
    assert pending[0].wait(5) is not None and pending[0].reply.fields == {"value": 0}
    assert pending[1].wait(5) is not None
    assert any(f.code == "flags-reply" for f in pending[1].reply.findings)
    ours.close()
    assert pending[2].wait(5) is None  # the channel closed before a reply
    report = fe.close()
    assert any(f.code == "flags-reply" for f in report.violations)
