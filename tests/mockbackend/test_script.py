"""The Script over a fake front-end: the identity it declares, overrides and hooks, acks.

The other parts of the scripting API have their module's file: devices/test_blk.py,
test_faults.py, test_expect.py, test_channel.py, test_postcopy.py, test_server.py."""

from __future__ import annotations

from mockbackend import Answer, BlkDevice, Script
from mockbackend.testing import FakeFrontend
from vhtrace.protocol.spec import ProtocolFeature


def test_declared_identity_is_what_the_front_end_reads(image) -> None:
    config = bytes(range(40))
    script = Script(BlkDevice(image), features=1 << 32, config=config, queues=3)
    script.protocol_features |= 1 << ProtocolFeature.STATUS
    fe = FakeFrontend(script)
    assert fe.ask("GET_FEATURES")["features"] == 1 << 32 | 1 << 30
    assert fe.ask("GET_PROTOCOL_FEATURES")["features"] >> ProtocolFeature.STATUS & 1
    fe.send("SET_PROTOCOL_FEATURES", {"features": script.protocol_features})
    assert fe.ask("GET_QUEUE_NUM") == {"value": 3}
    reply = fe.ask("GET_CONFIG", {"offset": 4, "size": 10, "flags": 0})
    assert reply["size"] == 10 and reply["region"] == config[4:14]
    fe.send("SET_STATUS", {"status": 0xF})
    assert fe.ask("GET_STATUS") == {"status": 0xF}
    fe.close()


def test_override_and_hooks_see_every_message_in_order(image) -> None:
    script = Script(BlkDevice(image))
    seen: list[str] = []

    @script.on("GET_QUEUE_NUM")
    def queue_num(ctx, msg) -> Answer:
        default = ctx.default(msg)
        assert default is not None and default.fields == {"value": 1}
        return Answer.u64(42)

    @script.before()
    def before(ctx, msg) -> None:
        seen.append(f"before {msg.name}")

    @script.after("GET_QUEUE_NUM")
    def after(ctx, msg, reply) -> None:
        seen.append(f"after {msg.name} -> {reply.fields}")

    @script.on("SET_OWNER")
    def broken(ctx, msg) -> None:
        raise RuntimeError("a bug in the script")

    fe = FakeFrontend(script)
    fe.negotiate()
    assert fe.ask("GET_QUEUE_NUM") == {"value": 42}
    assert fe.ask("GET_FEATURES")  # still serving after the script raised
    report = fe.close()
    assert "after GET_QUEUE_NUM -> {'value': 42}" in seen
    assert seen.index("before GET_QUEUE_NUM") < seen.index("after GET_QUEUE_NUM -> {'value': 42}")
    [error] = report.script_errors
    assert "handler raised at " in error and "RuntimeError: a bug in the script" in error
    assert f"{__file__}, line " in error  # the line of the raise, in this file
    assert not report.ok()


def test_need_reply_gets_an_ack_only_under_reply_ack(image) -> None:
    fe = FakeFrontend(Script(BlkDevice(image)))
    fe.negotiate()
    assert fe.ask("SET_VRING_NUM", {"index": 0, "num": 64}, need_reply=True) == {"value": 0}
    report = fe.close()
    assert report.violations == []
