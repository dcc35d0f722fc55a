"""Display filters: requests by name, id, alias or glob; ranges; the message filter."""

from __future__ import annotations

import pytest

from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.cli.common import UsageError
from vhtrace.cli.filters import MessageFilter, RequestFilter, display_name, parse_range
from vhtrace.protocol import spec
from vhtrace.trace.reader import TraceReader

MAIN, BACKEND = spec.Channel.MAIN.value, spec.Channel.BACKEND.value


def request_id(name: str) -> int:
    found = spec.lookup_request(name)
    assert found is not None
    return found[1]


def test_back_end_channel_requests_show_with_their_prefix() -> None:
    assert display_name(BACKEND, "IOTLB_MSG") == "BACKEND_IOTLB_MSG"
    assert display_name(BACKEND, "UNKNOWN_99") == "UNKNOWN_99"
    assert display_name(MAIN, "GET_FEATURES") == "GET_FEATURES"


def test_no_terms_is_no_filter() -> None:
    assert RequestFilter.parse([]) is None


def test_names_ids_aliases_and_commas() -> None:
    wanted = RequestFilter.parse(["GET_FEATURES,5", "set_slave_req_fd"])
    assert wanted is not None
    assert wanted.matches(MAIN, request_id("GET_FEATURES"), "GET_FEATURES")
    assert wanted.matches(MAIN, 5, "SET_MEM_TABLE")
    assert wanted.matches(MAIN, request_id("SET_BACKEND_REQ_FD"), "SET_BACKEND_REQ_FD")
    assert not wanted.matches(MAIN, request_id("SET_OWNER"), "SET_OWNER")


def test_globs_match_the_shown_name_or_the_bare_one() -> None:
    rings = RequestFilter.parse(["vhost_user_set_vring_*"])
    assert rings is not None
    assert rings.matches(MAIN, request_id("SET_VRING_KICK"), "SET_VRING_KICK")
    assert not rings.matches(MAIN, request_id("GET_VRING_BASE"), "GET_VRING_BASE")
    backend = RequestFilter.parse(["BACKEND_*"])
    assert backend is not None and backend.matches(BACKEND, 3, "IOTLB_MSG")
    assert not backend.matches(MAIN, request_id("SET_OWNER"), "SET_OWNER")


def test_a_misspelt_request_is_a_usage_error_with_a_suggestion() -> None:
    with pytest.raises(UsageError, match=r"--request SET_VRING_KIK: no such request \(did you"):
        RequestFilter.parse(["SET_VRING_KIK"])


@pytest.mark.parametrize(
    ("text", "bounds"),
    [(None, None), ("", None), ("15", (15, 15)), ("10-20", (10, 20)), ("10-", (10, 1 << 62)),
     ("-20", (0, 20))],
)  # fmt: skip
def test_ranges(text: str | None, bounds: tuple[int, int] | None) -> None:
    assert parse_range(text) == bounds


@pytest.mark.parametrize("text", ["ten", "1-x", "1-2-3"])
def test_a_bad_range_says_what_is_expected(text: str) -> None:
    with pytest.raises(UsageError, match="expected N, A-B, A- or -B"):
        parse_range(text)


@pytest.fixture
def messages(synthetic_trace) -> list[AnalysedMessage]:
    """Two back-to-back synthetic blk sessions, analysed."""
    with TraceReader(synthetic_trace(72)) as reader:
        items = analyser_for(reader.header).run(reader)
        return [item for item in items if isinstance(item, AnalysedMessage)]


def test_the_message_filter_ands_its_conditions(messages: list[AnalysedMessage]) -> None:
    assert all(MessageFilter().matches(m) for m in messages)
    second = MessageFilter(session=2, sender="backend")
    kept = [m for m in messages if second.matches(m)]
    assert kept and all(m.record.session == 2 and m.record.sender == "backend" for m in kept)
    ranged = MessageFilter(seq_range=(3, 5))
    assert [m.record.seq for m in messages if ranged.matches(m)] == [3, 4, 5]
    kicks = MessageFilter(requests=RequestFilter.parse(["SET_VRING_KICK"]))
    assert [m.analysis.name for m in messages if kicks.matches(m)] == ["SET_VRING_KICK"] * 2
    assert not any(MessageFilter(findings_only=True).matches(m) for m in messages)


def test_events_are_hidden_only_by_message_filters() -> None:
    assert not MessageFilter().narrows_events
    assert not MessageFilter(session=1).narrows_events
    assert MessageFilter(findings_only=True).narrows_events
    assert MessageFilter(seq_range=(1, 2)).narrows_events
