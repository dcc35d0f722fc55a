"""--unknown forward: a real back-end follows the live conversation and answers the unknown.

The test plays both the live front-end (its messages, as replay's connection sees them)
and the real back-end (the other end of the shadow's socket)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from vhtrace.protocol import spec
from vhtrace.protocol.connection import Connection, Received
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, Side
from vhtrace.replay.session import UnknownRequest
from vhtrace.replay.shadow import Shadow
from vhtrace.wire import recv_chunk, send_frame


class Live:
    """The live front-end's messages as the replayed back-end receives them."""

    def __init__(self) -> None:
        self.connection = Connection(Side.BACKEND)

    def message(self, name: str, fields: dict | None = None, **options) -> Received:
        frame = build(name, fields, **options)
        [received] = self.connection.receive_data(frame.raw, frame.fds)
        assert isinstance(received, Received)
        return received

    def unknown(self, received: Received) -> UnknownRequest:
        pending = self.connection.conversation.pending[Channel.MAIN]
        owed = next((p for p in pending if p.seq == received.wire.seq), None)
        return UnknownRequest(received.wire, received.frame.fds, owed)


@pytest.fixture
def pair() -> Iterator[tuple[Shadow, socket.socket]]:
    ours, real = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    real.settimeout(5)
    shadow = Shadow(ours, "real.sock")
    yield shadow, real
    shadow.close()
    real.close()


def test_every_request_reaches_the_real_back_end_as_it_came(pair) -> None:
    shadow, real = pair
    live = Live()
    for name, fields in (("SET_OWNER", None), ("SET_VRING_NUM", {"index": 0, "num": 64})):
        received = live.message(name, fields)
        shadow.forward(Channel.MAIN, received.wire, ())
        assert real.recv(64) == received.frame.raw


def test_an_unknown_request_gets_the_real_back_ends_reply(pair) -> None:
    shadow, real = pair
    live = Live()
    asked = live.message("GET_FEATURES")
    shadow.forward(Channel.MAIN, asked.wire, ())
    assert real.recv(64) == asked.frame.raw
    send_frame(real, build("GET_FEATURES", {"features": 0x1234}, reply=True))
    answer = shadow.policy(live.unknown(asked))
    assert answer is not None
    assert answer.payload == (0x1234).to_bytes(8, "little")
    assert answer.how == "answered by the real back-end at real.sock"


def test_a_request_without_a_reply_owed_is_answered_with_nothing(pair) -> None:
    shadow, _ = pair
    live = Live()
    owner = live.message("SET_OWNER")
    shadow.forward(Channel.MAIN, owner.wire, ())
    answer = shadow.policy(live.unknown(owner))
    assert answer is not None and answer.payload == b"" and "no reply owed" in answer.how


def test_a_request_never_forwarded_or_a_back_end_gone_is_no_answer(pair) -> None:
    shadow, real = pair
    live = Live()
    assert shadow.policy(live.unknown(live.message("GET_FEATURES"))) is None
    asked = live.message("GET_PROTOCOL_FEATURES")
    shadow.forward(Channel.MAIN, asked.wire, ())
    real.close()
    assert shadow.policy(live.unknown(asked)) is None
    assert shadow.link.closed


def test_the_shadows_back_end_channel_ends_at_us_and_is_acked(pair) -> None:
    shadow, real = pair
    live = Live()
    theirs, _ = socket.socketpair()
    try:
        channel = live.message("SET_BACKEND_REQ_FD", fds=(theirs.fileno(),))
        shadow.forward(Channel.MAIN, channel.wire, (theirs.fileno(),))
        data, fds, _ = recv_chunk(real, 64)
        assert data == channel.frame.raw and len(fds) == 1
        assert not os.path.samestat(os.fstat(fds[0]), os.fstat(theirs.fileno()))
        backend_channel = socket.socket(fileno=fds[0])
        backend_channel.settimeout(5)
        with backend_channel:
            request = build("CONFIG_CHANGE_MSG", channel=Channel.BACKEND, need_reply=True)
            send_frame(backend_channel, request)
            ack = backend_channel.recv(64)
        assert ack[4] == spec.REPLY_FLAGS and ack[12:] == bytes(8)
    finally:
        theirs.close()
