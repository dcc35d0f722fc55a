"""Every table keyed by a request name or a layout names one the spec has.

A misspelt key in one of these tables turns a check, a state change, a handler or a
timeline line off without a sound: these tests are what makes it loud.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from mockbackend import handlers
from vhtrace import stats
from vhtrace.memory import recording
from vhtrace.protocol import checks, conversation, payloads, spec
from vhtrace.protocol.spec import Channel
from vhtrace.replay import rules


def _names(channel: Channel) -> set[str]:
    return {row.name for row in spec.REQUESTS[channel].values()}


def _unknown(keys: Iterable[str], channel: Channel = Channel.MAIN) -> list[str]:
    return sorted(set(keys) - _names(channel))


@pytest.mark.parametrize(
    ("table", "channel"),
    [
        ("checks.REQUEST_CHECKS[main]", Channel.MAIN),
        ("checks.REQUEST_CHECKS[backend]", Channel.BACKEND),
    ],
)
def test_request_checks_name_requests_of_their_channel(table: str, channel: Channel) -> None:
    assert _unknown(checks.REQUEST_CHECKS[channel], channel) == [], table


def test_reply_checks_name_layouts() -> None:
    assert sorted(set(checks.REPLY_CHECKS) - set(payloads.LAYOUTS)) == []


def test_conversation_state_changes_name_front_end_requests() -> None:
    assert _unknown(conversation._REQUEST_EFFECTS) == []
    assert _unknown(conversation._REPLY_EFFECTS) == []
    assert _unknown(conversation._RING_STOPS) == []
    assert set(conversation._REPLY_EFFECTS) >= conversation._RING_STOPS


def test_mock_back_end_handlers_name_front_end_requests() -> None:
    assert _unknown(handlers.HANDLERS) == []


def test_stats_timeline_names_front_end_requests() -> None:
    assert _unknown(stats.MILESTONES) == []
    assert _unknown(stats._CONFIG_REQUESTS) == []


def test_replay_ignore_rules_name_requests() -> None:
    every = _names(Channel.MAIN) | _names(Channel.BACKEND)
    named = {request for rule in rules.DEFAULT_RULES for request in rule.requests}
    assert sorted(named - every) == []


def test_snapshot_areas_name_every_area_the_conversation_passes() -> None:
    assert set(recording._AREA_NAMES) == {"inflight", "log"}


def test_a_misspelt_key_is_caught() -> None:
    """The check itself can fail."""
    assert _unknown({"SET_VRING_KIKC", "GET_FEATURES"}) == ["SET_VRING_KIKC"]
