"""Building messages by name: the row a name resolves to, the header flags and payload."""

from __future__ import annotations

import pytest

from vhtrace.protocol import spec
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.messages import build, resolve
from vhtrace.protocol.spec import Channel


def test_names_resolve_with_or_without_the_c_prefix_in_any_case() -> None:
    row = resolve("SET_VRING_NUM")
    assert resolve(" vhost_user_set_vring_num ") is row
    assert resolve(row.id) is row


def test_back_end_channel_names_take_their_prefixes_and_old_aliases() -> None:
    row = resolve("IOTLB_MSG", Channel.BACKEND)
    assert row in spec.BACKEND_REQUESTS
    assert resolve("BACKEND_IOTLB_MSG", Channel.BACKEND) is row
    assert resolve("SLAVE_IOTLB_MSG", Channel.BACKEND) is row
    assert resolve(row.id, Channel.BACKEND) is row


def test_an_old_main_channel_alias_names_the_new_request() -> None:
    assert resolve("SET_SLAVE_REQ_FD").name == "SET_BACKEND_REQ_FD"


@pytest.mark.parametrize(
    ("name", "channel"), [("NO_SUCH_REQUEST", None), (9999, None), ("SET_OWNER", Channel.BACKEND)]
)
def test_unknown_names_ids_and_wrong_channels_are_key_errors(name, channel) -> None:
    with pytest.raises(KeyError):
        resolve(name, channel)


def test_a_request_has_version_flags_and_its_payload_size() -> None:
    frame = build("SET_VRING_NUM", {"index": 1, "num": 256})
    assert (frame.request, frame.flags, frame.size) == (
        resolve("SET_VRING_NUM").id,
        spec.VERSION,
        8,
    )
    assert frame.payload == (1).to_bytes(4, "little") + (256).to_bytes(4, "little")
    assert Frame.parse(frame.raw) == frame


def test_reply_and_need_reply_set_their_flags_and_a_reply_uses_the_reply_layout() -> None:
    asked = build("SET_VRING_ENABLE", {"index": 0, "num": 1}, need_reply=True)
    assert asked.flags == spec.VERSION | spec.FLAG_NEED_REPLY
    reply = build("GET_FEATURES", {"features": 1 << 32}, reply=True)
    assert reply.flags == spec.VERSION | spec.FLAG_REPLY
    assert (reply.size, reply.payload) == (8, (1 << 32).to_bytes(8, "little"))
    assert build("GET_FEATURES").size == 0


def test_fds_go_with_the_frame() -> None:
    assert build("SET_VRING_KICK", {"index": 0}, fds=(5,)).fds == (5,)
