"""The plan: which recorded messages are ours, and what each of ours waits for."""

from __future__ import annotations

from tests.replay.builders import analysed, conversation, fe
from vhtrace.analysis import AnalysedMessage
from vhtrace.protocol.spec import Side
from vhtrace.replay.plan import plan_sessions
from vhtrace.trace import format as fmt
from vhtrace.trace.records import EventRecord


def labels(steps) -> list[str]:
    return [s.label for s in steps]


def test_frontend_plan_waits_where_replies_come() -> None:
    [plan] = plan_sessions(analysed(conversation()), Side.FRONTEND)
    by = {s.seq: s for s in plan.steps}
    assert by[1].ours and not by[2].ours
    assert by[3].deps == {2}  # GET_PROTOCOL_FEATURES after the GET_FEATURES reply
    assert by[10].deps == {9}  # SET_OWNER after SET_BACKEND_REQ_FD's ack (NEED_REPLY)
    # the front-end's back-end-channel reply waits for the request it answers
    assert labels([by[22]]) == ["#22 CONFIG_CHANGE_MSG reply"] and 21 in by[22].deps
    # a spontaneous back-end request holds nothing of ours up
    assert all(21 not in s.deps for s in plan.steps if s.seq != 22)
    assert plan.end_reason == "frontend closed"
    assert not plan.peer_closes


def test_backend_plan_replies_after_the_request_and_sends_channel_requests_at_their_point() -> None:
    [plan] = plan_sessions(analysed(conversation()), Side.BACKEND)
    by = {s.seq: s for s in plan.steps}
    assert by[2].ours and by[2].deps == {1}
    assert by[13].deps == {12}
    # the back-end-channel request goes out once the front-end message before it arrived
    assert by[21].ours and 19 in by[21].deps
    assert not by[22].ours
    assert plan.peer_closes  # the front-end closed the recorded session


def test_until_and_sessions() -> None:
    items = analysed(conversation())
    [plan] = plan_sessions(items, Side.FRONTEND, until=9)
    assert [s.seq for s in plan.steps] == list(range(1, 10))
    assert not plan.peer_closes and not plan.we_close
    assert plan_sessions(items, Side.FRONTEND, sessions=[2]) == []


def test_the_back_end_closing_is_expected() -> None:
    [plan] = plan_sessions(analysed(conversation(), end="backend closed"), Side.FRONTEND)
    assert plan.peer_closes and not plan.we_close
    [plan] = plan_sessions(analysed(conversation(), end="backend closed"), Side.BACKEND)
    assert plan.we_close and not plan.peer_closes


def test_a_message_cut_short_ends_the_plan_with_a_note() -> None:
    items = analysed(conversation()[:12])
    cut = []
    for item in items:
        if isinstance(item, AnalysedMessage) and item.record.seq == 10:
            item.record = item.record._replace(flags=fmt.MESSAGE_INCOMPLETE)
        cut.append(item)
    [plan] = plan_sessions(cut, Side.FRONTEND)
    assert [s.seq for s in plan.steps] == list(range(1, 10))
    assert plan.notes == [
        "#10 SET_OWNER was cut short in the recording: the replay stops before it"
    ]


def test_times_are_relative_to_the_session() -> None:
    [plan] = plan_sessions(analysed([fe("GET_FEATURES")] * 3), Side.FRONTEND)
    assert [round(s.time * 1e6) for s in plan.steps] == [0, 1, 2]


def test_streams_are_kept_per_session() -> None:
    from vhtrace.trace.records import StreamRecord

    items = analysed(conversation()[:3], end=None)
    items.append(StreamRecord(99, 0, 0, 1, "device-state", "backend", b"state"))
    items.append(EventRecord(0, 0, 1, "session-end", {"reason": "frontend closed"}))
    [plan] = plan_sessions(items, Side.FRONTEND)
    assert plan.stream_bytes("device-state", Side.BACKEND) == b"state"
    assert plan.stream_bytes("device-state", Side.FRONTEND) == b""
