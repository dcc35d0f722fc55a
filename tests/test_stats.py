"""Aggregates of a trace: counts by request and channel, fds, sessions and their timeline."""

from __future__ import annotations

from tests.replay.builders import START_NS, conversation, records
from vhtrace.analysis import Analyser
from vhtrace.stats import TraceStats
from vhtrace.trace.records import EventRecord


def gathered(*, count_requests: bool = True) -> TraceStats:
    """The stats of one session of the replay builders' conversation, start and end events."""
    msgs = records(conversation())
    start = EventRecord(START_NS, 0, 1, "session-start", {"frontend": {"pid": 3}})
    end = EventRecord(msgs[-1].mono_ns + 1, 0, 1, "session-end", {"reason": "eof"})
    stats, analyser = TraceStats(count_requests=count_requests), Analyser()
    for record in [start, *msgs, end]:
        for item in analyser.feed(record):
            stats.add(item, analyser.conversations)
    return stats


def test_requests_replies_channels_and_fds_are_counted() -> None:
    stats = gathered()
    assert stats.requests[("main", "GET_FEATURES")] == 1
    assert stats.replies[("main", "GET_FEATURES")] == 1
    assert stats.requests[("main", "SET_VRING_ENABLE")] == 2
    assert stats.requests[("backend", "CONFIG_CHANGE_MSG")] == 1
    assert stats.messages["backend"] == 2
    assert sum(stats.messages.values()) == len(records(conversation()))
    assert (stats.fds["eventfd"], stats.fds["memfd"], stats.fds["socket"]) == (2, 1, 1)


def test_without_counting_the_timeline_is_still_kept() -> None:
    stats = gathered(count_requests=False)
    assert not stats.requests and not stats.messages and not stats.fds
    assert stats.sessions[1].timeline


def test_a_session_knows_its_span_its_events_and_its_negotiated_state() -> None:
    stats = gathered()
    session = stats.sessions[1]
    assert session.messages == len(records(conversation()))
    assert session.start_info == {"frontend": {"pid": 3}}
    assert session.end_info == {"reason": "eof"}
    assert session.state is not None and session.state.queue_num == 1
    assert stats.first_ns is not None and stats.last_ns is not None
    assert (stats.first_ns, stats.last_ns) == (START_NS, session.last_ns + 1)  # the events
    assert session.first_ns is not None and session.first_ns < session.last_ns


def test_the_timeline_tells_the_session_in_order() -> None:
    texts = [text for _, _, text in gathered().sessions[1].timeline]
    assert texts[0] == "session-start" and texts[-1] == "session-end (eof)"
    expected = ["first message", "protocol features set", "back-end channel passed",
                "session owner set", "features set", "memory region gpa 0x0 size 1 MiB added",
                "ring 0 started", "ring 0 enabled", "first back-end channel message",
                "the back-end's config changed", "ring 0 disabled",
                "ring 0 stopped at 7"]  # fmt: skip
    positions = [texts.index(text) for text in expected]
    assert positions == sorted(positions), texts
    assert texts.count("first back-end channel message") == 1


def test_findings_are_kept_with_their_session() -> None:
    findings = gathered().findings
    assert [(session, f.code) for session, f in findings] == [(1, "not-negotiated")]
