"""The --snapshot language and when each trigger fires."""

from __future__ import annotations

import pytest

from tests.memory.talk import Talk
from vhtrace.memory import triggers
from vhtrace.memory.triggers import TriggerError
from vhtrace.protocol import spec
from vhtrace.protocol.spec import Channel, Side


def test_the_default_is_ring_start_and_stop() -> None:
    default = triggers.parse(triggers.DEFAULT)
    assert default.start and default.stop and not default.before and default.every is None
    assert str(default) == "start,stop"


def test_every_trigger_parses_and_prints_back() -> None:
    parsed = triggers.parse(
        "stop, before:set_mem_table,after:VHOST_USER_GET_VRING_BASE,"
        "every:2.5s,signal,before:SLAVE_IOTLB_MSG"
    )
    assert parsed.stop and not parsed.start and parsed.signal and parsed.every == 2.5
    assert (Channel.MAIN.value, 5) in parsed.before
    assert (Channel.BACKEND.value, 1) in parsed.before
    assert str(parsed) == (
        "stop,before:SET_MEM_TABLE,before:BACKEND_IOTLB_MSG,after:GET_VRING_BASE,every:2.5,signal"
    )
    assert not triggers.parse("none").any


@pytest.mark.parametrize(
    "text", ["sometimes", "before:", "before:NOPE", "every:x", "every:0", "every:-1", "stop:1"]
)
def test_bad_triggers_say_what_is_wrong(text: str) -> None:
    with pytest.raises(TriggerError):
        triggers.parse(text)


def test_before_matches_requests_only_from_their_sender() -> None:
    wanted = triggers.parse("before:SET_VRING_KICK")
    main, fe, be = Channel.MAIN.value, Side.FRONTEND.value, Side.BACKEND.value
    assert triggers.before(wanted, main, fe, 12, 0x1) == "before:SET_VRING_KICK"
    assert triggers.before(wanted, main, be, 12, 0x5) is None  # a reply
    assert triggers.before(wanted, main, be, 12, 0x1) is None  # not the requester
    assert triggers.before(wanted, main, fe, 13, 0x1) is None


def fired(talk: Talk, spec_text: str, name: str, fields=None, **kw) -> list:
    analysis, request, owed = talk.send(name, fields, **kw)
    return triggers.after(triggers.parse(spec_text), analysis, request, talk.state, owed)


def test_start_fires_at_enable_after_the_kick_when_rings_need_enabling() -> None:
    talk = Talk()
    features = 1 << spec.VIRTIO_F_PROTOCOL_FEATURES | 1 << spec.VIRTIO_F_VERSION_1
    talk.send("SET_FEATURES", {"features": features})
    assert fired(talk, "start", "SET_VRING_KICK", {"index": 0, "nofd": False}, fds=1) == []
    assert fired(talk, "start", "SET_VRING_ENABLE", {"index": 0, "num": 1}) == [("start", 0)]
    assert fired(talk, "start", "SET_VRING_ENABLE", {"index": 1, "num": 1}) == []  # no kick yet


def test_start_fires_at_the_kick_without_protocol_features() -> None:
    talk = Talk()
    talk.send("SET_FEATURES", {"features": 1 << spec.VIRTIO_F_VERSION_1})
    assert fired(talk, "start", "SET_VRING_KICK", {"index": 2, "nofd": False}, fds=1) == [
        ("start", 2)
    ]


def test_stop_fires_at_the_get_vring_base_reply() -> None:
    talk = Talk()
    assert fired(talk, "stop", "GET_VRING_BASE", {"index": 0, "num": 0}) == []
    assert fired(talk, "stop", "GET_VRING_BASE", {"index": 0, "num": 7}, reply=True) == [
        ("stop", 0)
    ]


def test_after_waits_for_the_reply_when_one_is_owed() -> None:
    talk = Talk()
    assert fired(talk, "after:GET_FEATURES", "GET_FEATURES") == []
    assert fired(talk, "after:GET_FEATURES", "GET_FEATURES", {"features": 1}, reply=True) == [
        ("after:GET_FEATURES", None)
    ]
    assert fired(talk, "after:SET_OWNER", "SET_OWNER") == [("after:SET_OWNER", None)]
