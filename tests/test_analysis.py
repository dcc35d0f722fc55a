"""Trace records in, analysed messages out: one conversation per session, late findings."""

from __future__ import annotations

from tests.replay.builders import analysed, be, conversation, fe, records
from vhtrace.analysis import AnalysedMessage, Analyser, LateFindings, analyser_for, device_of
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.spec import DeviceType
from vhtrace.trace.records import EventRecord


def test_the_device_is_the_users_else_the_traces() -> None:
    assert device_of({"device": "blk"}) is DeviceType.BLK
    assert device_of({"device": "blk"}, "net") is DeviceType.NET
    assert device_of({}) is None and device_of({"device": "toaster"}) is None
    assert analyser_for({"device": "fs"}).device is DeviceType.FS
    assert analyser_for({}, "net").force


def test_each_message_is_analysed_in_its_sessions_conversation() -> None:
    items = analysed(conversation())
    messages = [i for i in items if isinstance(i, AnalysedMessage)]
    assert [m.record.seq for m in messages] == list(range(1, len(messages) + 1))
    first, reply = messages[:2]
    assert (first.analysis.name, first.analysis.role) == ("GET_FEATURES", Role.REQUEST)
    assert (reply.analysis.role, reply.analysis.answers) == (Role.REPLY, 1)
    flagged = [(m.analysis.name, f.code) for m in messages for f in m.analysis.findings]
    assert flagged == [("ADD_MEM_REG", "not-negotiated")]  # no CONFIGURE_MEM_SLOTS offered


def test_two_sessions_have_two_conversations() -> None:
    analyser = Analyser()
    one = records([fe("GET_FEATURES"), be("GET_FEATURES", {"features": 1})], session=1)
    two = records([fe("SET_OWNER")], session=2, first_seq=3)
    items = [item for record in [*one, *two] for item in analyser.feed(record)]
    assert sorted(analyser.conversations) == [1, 2]
    assert analyser.conversations[1].state.features_offered == 1
    assert analyser.conversations[2].state.features_offered is None
    list(analyser.finish())
    assert analyser.conversations == {}
    assert [i.record.session for i in items if isinstance(i, AnalysedMessage)] == [1, 1, 2]


def test_a_reply_that_never_came_is_a_late_finding_when_the_session_ends() -> None:
    asked = records([fe("GET_VRING_BASE", {"index": 0, "num": 0})])
    end = EventRecord(asked[-1].mono_ns + 1, 0, 1, "session-end", {"reason": "eof"})
    items = list(Analyser().run([*asked, end]))
    late = [i for i in items if isinstance(i, LateFindings)]
    assert len(late) == 1 and late[0].session == 1
    [finding] = late[0].findings
    assert finding.seq == 1 and finding.request == "GET_VRING_BASE"


def test_a_trace_that_stops_mid_session_still_closes_it() -> None:
    asked = records([fe("GET_FEATURES")])
    items = list(Analyser().run(asked))
    assert any(isinstance(i, LateFindings) for i in items)


def test_the_session_start_event_names_the_device_and_the_front_end() -> None:
    info = {"device": "net", "frontend": {"pid": 1, "program": "qemu-kvm"}}
    start = EventRecord(0, 0, 1, "session-start", info)
    analyser = Analyser(DeviceType.BLK)
    for record in [start, *records([fe("SET_OWNER")])]:
        list(analyser.feed(record))
    state = analyser.conversations[1].state
    assert state.device is DeviceType.NET and state.frontend is not None


def test_the_device_is_inferred_from_the_back_ends_features_when_nothing_says() -> None:
    analyser = Analyser()
    offer = be("GET_FEATURES", {"features": 0xD7C66E7CB})  # a virtio-net back-end's offer
    list(analyser.run(records([fe("GET_FEATURES"), offer])))
    assert analyser.inferences[1].device is DeviceType.NET
    assert "only net defines" in analyser.inferences[1].how
