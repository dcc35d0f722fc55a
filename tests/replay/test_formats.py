"""A replay's result as JSON and as JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from tests.replay.test_report import diverged_result
from vhtrace.replay import formats
from vhtrace.replay.report import ReplayResult


def test_json_has_the_divergence_and_every_check() -> None:
    data = json.loads(formats.to_json(diverged_result()))
    assert (data["result"], data["exit_code"]) == ("diverged", 1)
    [divergence] = data["divergences"]
    assert divergence["seq"] == 7 and divergence["kind"] == "mismatch"
    assert divergence["differences"] == [{"field": "value", "recorded": "1", "live": "2"}]
    statuses = {c["seq"]: c["status"] for c in data["sessions"][0]["checks"]}
    assert statuses[2] == "ok" and statuses[7] == "diverged" and statuses[9] == "not reached"


def test_junit_counts_failures_and_skips() -> None:
    root = ET.fromstring(formats.to_junit(diverged_result()))
    [suite] = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("9", "1", "6")
    [failed] = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failed.get("name") == "#7 GET_QUEUE_NUM reply"
    failure = failed.find("failure")
    assert failure is not None and "value: recorded 1, live 2" in (failure.text or "")


def test_junit_for_an_unusable_replay() -> None:
    result = ReplayResult("t.vht", "frontend", "x", error="t.vht: not a vhtrace trace")
    root = ET.fromstring(formats.to_junit(result))
    assert root.find("testsuite/testcase/error") is not None
    assert result.exit_code == 2
