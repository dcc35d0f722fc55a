"""The mock's side of one connection (``ctx`` in scripts): what it keeps and reports."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from mockbackend import BlkDevice, Script
from mockbackend.context import MAX_RINGS, ConnectionClosed, Context
from vhtrace.protocol.connection import Received
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import DeviceType


@pytest.fixture
def ctx() -> Iterator[Context]:
    ours, theirs = socket.socketpair()
    context = Context(ours, Script(), lambda ctx, msg: None)
    yield context
    context.release()
    ours.close()
    theirs.close()


def received(ctx: Context, name: str, fields: dict | None = None, **options) -> Received:
    """A front-end message as the mock's connection hands it over."""
    frame = build(name, fields, **options)
    [event] = ctx.connection.receive_data(frame.raw, frame.fds)
    assert isinstance(event, Received)
    return event


def test_a_message_is_kept_counted_and_its_findings_are_violations(ctx: Context) -> None:
    msg = ctx.receive(received(ctx, "GET_FEATURES"))
    assert (msg.name, msg.seq) == ("GET_FEATURES", 1)
    assert ctx.messages == [msg] and ctx.report.messages == 1
    bad = ctx.receive(received(ctx, "SET_VRING_NUM", {"index": 0, "num": 3}))
    assert bad.findings and ctx.report.violations == bad.findings


def test_notes_errors_and_script_errors_go_to_the_report(ctx: Context) -> None:
    ctx.note(4, "shrunk", "guest memory shrank")
    ctx.error("ring 0: desc 3 out of range")
    try:
        raise ValueError("bad hook")
    except ValueError as exc:
        ctx.script_error("hook h", exc)
    assert [(f.seq, f.code) for f in ctx.report.violations] == [(4, "shrunk")]
    assert ctx.report.errors == ["ring 0: desc 3 out of range"]
    [error] = ctx.report.script_errors
    assert error.startswith("hook h raised at ") and error.endswith("ValueError: bad hook")


def test_close_ends_the_connection_with_the_reason(ctx: Context) -> None:
    with pytest.raises(ConnectionClosed, match="enough"):
        ctx.close("enough")


def test_rings_follow_the_scripts_queue_count_within_bounds(ctx: Context) -> None:
    assert len(ctx.rings) == max(1, Script().queues)
    assert ctx.ring(0) is ctx.rings[0] and ctx.ring(-1) is None and ctx.ring(len(ctx.rings)) is None
    assert len(ctx.rings) <= MAX_RINGS


def test_the_device_names_the_conversations_device_type(tmp_path) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(512))
    ours, theirs = socket.socketpair()
    context = Context(ours, Script(BlkDevice(str(disk))), lambda ctx, msg: None)
    try:
        assert context.state.device is DeviceType.BLK
    finally:
        context.release()
        ours.close()
        theirs.close()


def test_a_request_left_unanswered_at_the_end_is_ours_not_the_front_ends(ctx: Context) -> None:
    ctx.receive(received(ctx, "GET_FEATURES"))
    ctx.release()
    assert [f.code for f in ctx.report.own] == ["no-reply"]
    assert not [f for f in ctx.report.violations if f.code == "no-reply"]
