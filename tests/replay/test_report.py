"""How a replay's result reads: the text report and its headline (JSON and JUnit XML:
test_formats.py)."""

from __future__ import annotations

from tests.replay.builders import conversation, with_reply
from tests.replay.test_player import Playbook, live_views
from vhtrace.protocol.spec import Side
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


def test_ignored_differences_show_in_verbose_text() -> None:
    book = Playbook(Side.FRONTEND)
    book.run(live_views(conversation(base=0), Side.BACKEND))
    session = SessionResult(1, book.player.all_checks(), [], 17, 9, 26)
    text = "\n".join(render_text(ReplayResult("t", "frontend", "x", [session]), verbose=True))
    assert "ignored num: recorded 7, live 0 (a ring position" in text
