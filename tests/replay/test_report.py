"""How a replay's result reads: the text report, JSON, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from tests.replay.builders import conversation, with_reply
from tests.replay.test_player import Playbook, live_views
from vhtrace.protocol.spec import Side
from vhtrace.replay import formats
from vhtrace.replay.report import ReplayResult, SessionResult, headline, render_text


def diverged_result() -> ReplayResult:
    book = Playbook(Side.FRONTEND)
    book.run(live_views(with_reply(conversation(), "GET_QUEUE_NUM", {"value": 2}), Side.BACKEND))
    session = SessionResult(1, book.player.all_checks(), list(book.player.divergences), 4, 3, 26)
    return ReplayResult("t.vht", "frontend", "/tmp/be.sock", [session])


def test_text_report_names_message_request_field_and_values() -> None:
    text = "\n".join(render_text(diverged_result()))
    assert "session 1: DIVERGED: 4 sent, 3 received of 26 recorded; 2/3 checks matched" in text
    assert "  diverged at #7 GET_QUEUE_NUM reply: value differs" in text
    assert "    recorded: #7 GET_QUEUE_NUM reply 1" in text
    assert "    live:     GET_QUEUE_NUM reply 2" in text
    assert "      value: recorded 1, live 2" in text
    assert "closest recorded alternative: none" in text
    assert text.endswith("result: diverged (1 divergence, 7 messages in 0.000 s), exit 1")


def test_the_headline_is_the_first_divergence_with_its_field() -> None:
    assert headline(diverged_result()) == "#7 GET_QUEUE_NUM reply: value: recorded 1, live 2"


def test_the_headline_of_a_run_that_could_not_start_names_why() -> None:
    result = ReplayResult("t.vht", "frontend", "/tmp/be.sock", [], error="nothing listens")
    assert headline(result) == "vhtrace replay unusable: nothing listens"


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


def test_ignored_differences_show_in_verbose_text() -> None:
    book = Playbook(Side.FRONTEND)
    book.run(live_views(conversation(base=0), Side.BACKEND))
    session = SessionResult(1, book.player.all_checks(), [], 17, 9, 26)
    text = "\n".join(render_text(ReplayResult("t", "frontend", "x", [session]), verbose=True))
    assert "ignored num: recorded 7, live 0 (a ring position" in text
