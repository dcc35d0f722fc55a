"""The relay's decisions (interpose, --strict, hold), without sockets: frames in, decisions out."""

from __future__ import annotations

from typing import Any

from vhtrace.memory import triggers
from vhtrace.protocol.connection import Connection
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Side
from vhtrace.record.policy import FORWARD, Decision, Policy, opens

UNIX_STREAM = {"kind": "socket", "family": "unix", "type": "stream", "connected": True}
PIPE_META = {"kind": "pipe"}
EVENTFD = {"kind": "eventfd"}


class Metas:
    """fd metadata by fd number, counting what the policy asked for."""

    def __init__(self, metas: dict[int, dict[str, Any]]) -> None:
        self.metas = metas
        self.asked: list[int] = []

    def __call__(self, fd: int) -> dict[str, Any]:
        self.asked.append(fd)
        return self.metas[fd]


def decide(policy: Policy, frame: Frame, sender: Side = Side.FRONTEND,
           metas: dict[int, dict[str, Any]] | None = None,
           connection: Connection | None = None) -> Decision:  # fmt: skip
    return policy.decide(connection, 7, "main", sender, frame, Metas(metas or {}))


def test_an_ordinary_message_is_forwarded_and_no_fd_is_looked_at() -> None:
    metas = Metas({})
    frame = build("SET_VRING_CALL", {"index": 0, "nofd": False}, fds=(11,))
    assert Policy().decide(None, 1, "main", Side.FRONTEND, frame, metas) == FORWARD
    assert metas.asked == []


def test_the_backend_channel_is_interposed_when_the_frontend_sends_its_socket() -> None:
    frame = build("SET_BACKEND_REQ_FD", fds=(5,))
    decision = decide(Policy(), frame, metas={5: UNIX_STREAM})
    assert decision == Decision(interpose="backend")


def test_only_the_frontends_request_opens_the_backend_channel() -> None:
    frame = build("SET_BACKEND_REQ_FD", fds=(5,))
    assert opens("main", Side.BACKEND, frame) is None
    reply = Frame(frame.request, frame.flags | 0x4, 0, b"", (5,))
    assert opens("main", Side.FRONTEND, reply) is None
    assert opens("backend", Side.FRONTEND, frame) is None  # not on the back-end channel
    assert opens("main", Side.FRONTEND, build("SET_BACKEND_REQ_FD")) is None  # no fd


def test_the_device_state_pipe_is_interposed_from_either_side() -> None:
    fields = {"direction": 0, "phase": 0}
    request = build("SET_DEVICE_STATE_FD", fields, fds=(9,))
    assert decide(Policy(), request, metas={9: PIPE_META}).interpose == "device-state"
    assert opens("main", Side.BACKEND, request) == "device-state"


def test_a_wrong_kind_of_fd_is_relayed_as_it_came_and_strict_drops_it() -> None:
    frame = build("SET_BACKEND_REQ_FD", fds=(5,))
    lenient = decide(Policy(), frame, metas={5: EVENTFD})
    assert lenient.interpose is None and not lenient.drop
    assert lenient.wrong_fd == "an eventfd, a unix stream socket is due"
    strict = decide(Policy(strict=True), frame, metas={5: EVENTFD})
    assert strict.drop == strict.wrong_fd == "an eventfd, a unix stream socket is due"


def test_strict_drops_a_malformed_message_and_forwards_a_good_one() -> None:
    policy = Policy(strict=True)
    connection = Connection(None)
    assert decide(policy, build("GET_FEATURES"), connection=connection) == FORWARD
    bad = build("GET_FEATURES", fds=(3,))  # GET_FEATURES takes no fd
    why = decide(policy, bad, connection=connection).drop
    assert why and "fd" in why, why


def test_before_name_holds_the_request_not_the_reply() -> None:
    policy = Policy(hold=triggers.parse("before:GET_VRING_BASE"))
    request = build("GET_VRING_BASE", {"index": 0, "num": 0})
    reply = build("GET_VRING_BASE", {"index": 0, "num": 5}, reply=True)
    assert decide(policy, request) == Decision(hold=True)
    assert decide(policy, reply, sender=Side.BACKEND) == FORWARD
    assert decide(policy, build("GET_FEATURES")) == FORWARD
    assert not Policy(hold=None).holds("main", Side.FRONTEND, request)


def test_a_held_channel_opening_message_is_interposed_and_held() -> None:
    policy = Policy(hold=triggers.parse("before:SET_BACKEND_REQ_FD"))
    frame = build("SET_BACKEND_REQ_FD", fds=(5,))
    assert decide(policy, frame, metas={5: UNIX_STREAM}) == Decision(interpose="backend",
                                                                     hold=True)  # fmt: skip


def test_plain_messages_are_forwarded_as_they_come_unless_strict_or_held_before() -> None:
    assert Policy().forwards_plain_messages
    assert Policy(hold=triggers.parse("start,stop")).forwards_plain_messages, "after: only"
    assert not Policy(strict=True).forwards_plain_messages
    assert not Policy(hold=triggers.parse("before:GET_VRING_BASE")).forwards_plain_messages
