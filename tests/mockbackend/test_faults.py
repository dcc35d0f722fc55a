"""Faults a script injects: wrong replies, missing fds, drops, closes, garbage."""

from __future__ import annotations

import struct

import pytest

from mockbackend import (
    BlkDevice,
    Close,
    Delay,
    Drop,
    ExtraFds,
    Garbage,
    MissingFds,
    Script,
    WrongFlags,
    WrongRequest,
    WrongSize,
)
from mockbackend.testing import FakeFrontend
from vhtrace import wire
from vhtrace.protocol import spec


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (Delay(0.05), lambda f: f.flags == spec.REPLY_FLAGS and len(f.payload) == 8),
        (WrongFlags(0x1), lambda f: f.flags == 0x1),
        (WrongFlags(0x5 | 0x8), lambda f: f.flags == 0xD),
        (WrongSize(4), lambda f: f.size == 4 and len(f.payload) == 4),
        (WrongSize(16), lambda f: f.size == 16 and f.payload[8:] == bytes(8)),
        (WrongRequest("GET_STATUS"), lambda f: f.request == 40),
        (ExtraFds(2), lambda f: len(f.fds) == 2),
    ],
    ids=[
        "delay",
        "flags-no-reply-bit",
        "flags-need-reply",
        "short",
        "long",
        "request-id",
        "extra-fds",
    ],
)
def test_reply_faults_change_what_is_sent(image, fault, check) -> None:
    script = Script(BlkDevice(image))
    armed = script.fault(fault, on="GET_FEATURES", nth=2)
    fe = FakeFrontend(script)
    assert fe.ask("GET_FEATURES")  # the first one is fine
    fe.send("GET_FEATURES")
    frame = fe.read()
    assert check(frame), frame
    wire.close_fds(frame.fds)
    report = fe.close()
    assert armed.fired and report.unused_faults == []
    if not isinstance(fault, Delay):
        assert report.own, "the mock's own checks should flag the faulty reply"


def test_missing_fds_and_drop(image) -> None:
    script = Script(BlkDevice(image))
    script.fault(MissingFds(), on="GET_INFLIGHT_FD")
    script.fault(Drop(), on="GET_QUEUE_NUM")
    fe = FakeFrontend(script)
    fe.negotiate()
    fe.send("GET_INFLIGHT_FD", {"num_queues": 1, "queue_size": 64})
    reply = fe.read()
    assert reply.fds == () and struct.unpack_from("<Q", reply.payload)[0] > 0
    fe.send("GET_QUEUE_NUM")  # dropped: the next reply is GET_FEATURES'
    fe.send("GET_FEATURES")
    assert fe.read().request == 1
    report = fe.close()
    assert any(f.code == "no-reply" for f in report.own)


def test_close_at_message_n_and_garbage(image) -> None:
    script = Script(BlkDevice(image))
    script.fault(Garbage(b"\xff" * 12), on="GET_PROTOCOL_FEATURES")
    script.fault(Close(), at=3)
    fe = FakeFrontend(script)
    fe.send("GET_FEATURES")
    fe.read()
    fe.send("GET_PROTOCOL_FEATURES")
    assert fe.sock.recv(64) == b"\xff" * 12  # instead of the reply
    fe.send("SET_OWNER")  # message 3: the mock hangs up
    assert fe.sock.recv(64) == b""
    report = fe.close()
    assert "closed by fault Close" in report.closed_by


# ----------------------------------------------------------------------------
# What a fired fault logs
# ----------------------------------------------------------------------------


def test_a_fault_line_names_the_trigger_in_library_use_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script()
    script.fault(Drop(), on="GET_FEATURES")
    fe = FakeFrontend(script)
    with caplog.at_level("INFO", logger="mockbackend.faults"):
        fe.send("GET_FEATURES")
        fe.close()
    assert [r.getMessage() for r in caplog.records if r.name == "mockbackend.faults"] == [
        "fault Drop fired on #1 GET_FEATURES"
    ]
