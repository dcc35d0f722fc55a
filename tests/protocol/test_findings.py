"""Findings as data: how one reads, and its dict form round trips (traces and --json)."""

from __future__ import annotations

import pytest

from vhtrace.protocol.findings import Finding, Severity


def test_a_finding_says_where_and_what() -> None:
    finding = Finding(31, "SET_VRING_ENABLE", "no-reply", "NEED_REPLY set, no reply")
    assert str(finding) == "#31 SET_VRING_ENABLE: NEED_REPLY set, no reply"
    assert finding.severity is Severity.ERROR


def test_a_connection_finding_has_no_message_number_and_may_have_no_request() -> None:
    assert str(Finding(None, "", "eof", "closed mid-message")) == "closed mid-message"
    assert str(Finding(None, "GET_FEATURES", "x", "t")) == "GET_FEATURES: t"


@pytest.mark.parametrize("severity", list(Severity))
def test_the_dict_form_round_trips(severity: Severity) -> None:
    finding = Finding(7, "SET_MEM_TABLE", "fd-count", "carries 3 fds", severity)
    data = finding.to_dict()
    assert data == {
        "seq": 7,
        "request": "SET_MEM_TABLE",
        "code": "fd-count",
        "severity": severity.value,
        "text": "carries 3 fds",
    }
    assert Finding.from_dict(data) == finding


def test_a_dict_from_a_damaged_trace_still_reads() -> None:
    finding = Finding.from_dict({"seq": "7", "text": 5})
    assert finding == Finding(None, "", "", "5", Severity.ERROR)


def test_an_unknown_severity_is_refused() -> None:
    with pytest.raises(ValueError):
        Finding.from_dict({"severity": "fatal"})
