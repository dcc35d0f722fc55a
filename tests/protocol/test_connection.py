"""The protocol Connection: bytes and fds in, analysed messages out, no I/O."""

from __future__ import annotations

import struct

import pytest

from vhtrace.protocol import spec
from vhtrace.protocol.connection import Connection, Received, StrayFds
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.framing import Frame, OversizedData, OversizedStart, pack_header
from vhtrace.protocol.spec import Channel, Side

GET_FEATURES, SET_VRING_KICK = 1, 12


def _reply(request: int, payload: bytes) -> bytes:
    return pack_header(request, spec.REPLY_FLAGS, len(payload)) + payload


def test_a_reply_is_joined_to_the_request_we_sent_and_numbered_after_it() -> None:
    conn = Connection(Side.FRONTEND)
    frame, sent = conn.send("GET_FEATURES")
    assert frame.raw == pack_header(GET_FEATURES, spec.VERSION, 0)
    assert (sent.seq, sent.role, sent.name) == (1, Role.REQUEST, "GET_FEATURES")
    [event] = conn.receive_data(_reply(GET_FEATURES, struct.pack("<Q", 1 << 32)))
    assert isinstance(event, Received)
    assert (event.seq, event.analysis.role, event.analysis.answers) == (2, Role.REPLY, 1)
    assert event.analysis.fields == {"features": 1 << 32}
    assert conn.close() == []


def test_fds_stay_on_the_message_whose_first_byte_they_came_with() -> None:
    conn = Connection(Side.BACKEND)
    kick = pack_header(SET_VRING_KICK, spec.VERSION, 8) + struct.pack("<Q", 0)
    first, second = conn.receive_data(kick + kick, fds=[41])
    assert isinstance(first, Received) and isinstance(second, Received)
    assert (first.fds, second.fds) == ((41,), ())
    assert [f.code for f in second.analysis.findings] == ["fd-count"]


def test_a_message_split_over_reads_comes_whole_once() -> None:
    conn = Connection(Side.BACKEND)
    raw = pack_header(SET_VRING_KICK, spec.VERSION, 8) + struct.pack("<Q", 0)
    assert conn.bytes_wanted() == spec.HEADER_SIZE
    assert conn.receive_data(raw[:5], fds=[7]) == []
    assert conn.in_message()
    assert conn.bytes_wanted() == spec.HEADER_SIZE - 5
    [event] = conn.receive_data(raw[5:])
    assert isinstance(event, Received) and event.fds == (7,)
    assert not event.analysis.findings


def test_fds_inside_an_oversized_payload_are_stray_and_the_header_fds_come_once() -> None:
    conn = Connection(Side.BACKEND, max_payload=16)
    head = pack_header(GET_FEATURES, spec.VERSION, 32)
    events = conn.receive_data(head, fds=[3])
    events += conn.receive_data(b"\0" * 16, fds=[4])
    events += conn.receive_data(b"\0" * 16)
    stray = [e for e in events if isinstance(e, StrayFds)]
    [message] = [e for e in events if isinstance(e, Received)]
    assert [s.fds for s in stray] == [(4,)]
    assert message.fds == (3,)  # once: not also handed out with the oversized header
    assert message.frame.oversized and message.frame.payload == b"\0" * 16


def test_eof_inside_a_message_says_where_and_returns_its_fds() -> None:
    conn = Connection(Side.BACKEND)
    conn.receive_data(pack_header(SET_VRING_KICK, spec.VERSION, 8) + b"\0\0", fds=[9])
    truncated = conn.eof()
    assert truncated is not None
    assert truncated.fds == (9,)
    assert (
        truncated.description == "stream ended 2 of 8 payload bytes into request 12, 1 fds attached"
    )
    assert conn.eof() is None


def test_both_channels_share_one_numbering_and_one_state() -> None:
    conn = Connection(Side.FRONTEND)
    conn.send("GET_PROTOCOL_FEATURES")
    conn.receive_data(_reply(16, struct.pack("<Q", 1 << spec.ProtocolFeature.BACKEND_REQ)))
    conn.send("SET_PROTOCOL_FEATURES", {"features": 1 << spec.ProtocolFeature.BACKEND_REQ})
    config_change = pack_header(2, spec.VERSION, 0)  # BACKEND_CONFIG_CHANGE_MSG
    [event] = conn.receive_data(config_change, channel=Channel.BACKEND)
    assert isinstance(event, Received)
    assert (event.seq, event.channel, event.name) == (4, Channel.BACKEND, "CONFIG_CHANGE_MSG")
    assert conn.state.has_protocol(spec.ProtocolFeature.BACKEND_REQ)


def test_a_reply_still_owed_at_close_is_a_finding() -> None:
    conn = Connection(Side.FRONTEND)
    conn.send("GET_FEATURES")
    [finding] = conn.close("the test ended")
    assert (finding.seq, finding.code) == (1, "no-reply")
    assert "the test ended" in finding.text


def test_only_framed_channels_can_be_read() -> None:
    with pytest.raises(ValueError, match="not framed"):
        Connection(Side.FRONTEND).bytes_wanted(Channel.GPU)


# -- a proxy in the middle: Connection(None) ------------------------------------------


def test_a_proxy_reads_each_socket_apart_and_a_message_comes_once_whole() -> None:
    conn = Connection(None)
    kick = pack_header(SET_VRING_KICK, spec.VERSION, 8) + struct.pack("<Q", 0)
    first = conn.relay_reader(Channel.BACKEND, Side.BACKEND)
    second = conn.relay_reader(Channel.BACKEND, Side.BACKEND)  # a second back-end channel
    assert first.receive(kick[:5], [7]) == []
    assert first.in_message and not second.in_message
    assert second.bytes_wanted() == spec.HEADER_SIZE
    assert second.receive(kick) == [Frame.parse(kick)]
    [frame] = first.receive(kick[5:])
    assert frame.raw == kick and frame.fds == (7,)
    assert not first.in_message


def test_a_proxy_forwards_an_oversized_message_as_it_comes() -> None:
    conn = Connection(None, max_payload=16)
    reader = conn.relay_reader(Channel.MAIN, Side.FRONTEND)
    head = pack_header(GET_FEATURES, spec.VERSION, 32)
    start, piece = reader.receive(head + b"\1" * 10, [3])
    assert isinstance(start, OversizedStart) and start.header == head and start.fds == (3,)
    assert piece == OversizedData(b"\1" * 10)
    assert reader.receive(b"\2" * 6, [4]) == [OversizedData(b"\2" * 6, (4,))]
    leftover, streamed = reader.eof()
    assert streamed and leftover is not None and leftover.oversized
    assert leftover.data == head + b"\1" * 10 + b"\2" * 6


def test_a_proxy_sees_a_burst_of_whole_messages_as_one_piece() -> None:
    reader = Connection(None).relay_reader(Channel.MAIN, Side.FRONTEND)
    get = pack_header(GET_FEATURES, spec.VERSION, 0)
    kick = pack_header(SET_VRING_KICK, spec.VERSION, 8) + struct.pack("<Q", 0)
    assert reader.burst(get + kick) == [12, 32]
    assert reader.burst(get + kick[:13]) == [12]  # the cut one stays on the socket
    assert reader.burst(kick[:13]) == []  # read it as frames
    assert reader.eof() == (None, False)


def test_a_proxy_checks_a_relayed_message_under_its_own_number() -> None:
    conn = Connection(None)
    frame = Frame.parse(pack_header(GET_FEATURES, spec.VERSION, 0), fds=(5,))
    analysis = conn.check(41, Channel.MAIN, Side.FRONTEND, frame)
    assert analysis.seq == 41 and [f.code for f in analysis.findings] == ["fd-count"]


def test_a_proxy_frames_the_gpu_socket_only_when_told_its_limit() -> None:
    conn = Connection(None)
    with pytest.raises(ValueError, match="not framed"):
        conn.relay_reader(Channel.GPU, Side.BACKEND)
    conn.frame_channel(Channel.GPU, 1 << 20)
    big = pack_header(1, 0, 1 << 19) + bytes(1 << 19)
    assert [f.size for f in conn.relay_reader(Channel.GPU, Side.BACKEND).receive(big)] == [1 << 19]
    with pytest.raises(ValueError, match="relay_reader"):
        conn.bytes_wanted()
