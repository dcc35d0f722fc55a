"""What scripts return: an Answer becomes a frame, well-formed unless told otherwise."""

from __future__ import annotations

from mockbackend.messages import Answer, Reply, build_request
from vhtrace.protocol import payloads, spec
from vhtrace.protocol.messages import resolve
from vhtrace.protocol.spec import Channel

CTX = payloads.DEFAULT_CONTEXT
GET_FEATURES = resolve("GET_FEATURES").id


def test_a_default_answer_is_a_well_formed_reply_to_the_request() -> None:
    layout = resolve("GET_FEATURES").reply_payload
    frame = Answer({"features": 0x40000000}).frame(GET_FEATURES, layout, CTX)
    assert (frame.request, frame.flags, frame.size) == (GET_FEATURES, spec.REPLY_FLAGS, 8)
    assert frame.payload == (0x40000000).to_bytes(8, "little")


def test_ack_and_u64_shorthands() -> None:
    assert Answer.ack().frame(GET_FEATURES, "u64", CTX).payload == bytes(8)
    assert Answer.ack(1).fields == {"value": 1} and Answer.ack(1).layout == "ack"
    assert Answer.u64(7).frame(GET_FEATURES, "ack", CTX).payload == (7).to_bytes(8, "little")


def test_every_part_of_the_header_can_lie() -> None:
    frame = Answer(payload=b"\x01\x02", request=99, flags=0x1, size=64).frame(
        GET_FEATURES, "u64", CTX
    )
    assert (frame.request, frame.flags, frame.size, frame.payload) == (99, 0x1, 64, b"\x01\x02")


def test_fds_go_with_the_answer() -> None:
    assert Answer.ack().frame(GET_FEATURES, "u64", CTX).fds == ()
    assert Answer(fields={"value": 0}, fds=(9,)).frame(GET_FEATURES, "u64", CTX).fds == (9,)


def test_the_old_name_is_the_same_class() -> None:
    assert Reply is Answer


def test_requests_are_built_for_the_back_end_channel_by_default() -> None:
    frame = build_request("IOTLB_MSG", need_reply=True)
    assert frame.request == resolve("IOTLB_MSG", Channel.BACKEND).id
    assert frame.flags == spec.VERSION | spec.FLAG_NEED_REPLY
    assert build_request("GET_FEATURES", channel=Channel.MAIN).request == GET_FEATURES
