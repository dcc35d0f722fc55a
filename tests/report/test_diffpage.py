"""diff's side-by-side page: aligned rows, changed fields highlighted, everything escaped."""

from __future__ import annotations

from tests.replay.builders import Msg, analysed, be, conversation, fe
from vhtrace.analysis import AnalysedMessage
from vhtrace.replay.compare import view
from vhtrace.replay.rules import build_rules
from vhtrace.report.diffpage import render_diff_page
from vhtrace.tracediff import Message, counts, diff_traces


def messages(msgs: list[Msg]) -> list[Message]:
    items = [i for i in analysed(msgs) if isinstance(i, AnalysedMessage)]
    return [Message(i.record.seq, view(i.wire, i.analysis, i.record.fds)) for i in items]


def page(old: list[Msg], new: list[Msg], *, names: tuple[str, str] = ("a.vht", "b.vht")) -> str:
    results = diff_traces({1: messages(old)}, {1: messages(new)}, build_rules(defaults=False))
    return render_diff_page(*names, results, counts(results))


def test_the_same_conversation_is_same() -> None:
    html = page(conversation(), conversation())
    assert 'id="result">result: same (0 changed, 0 added, 0 removed)' in html
    assert html.count("<tr") >= len(conversation())


def test_a_changed_field_shows_both_values() -> None:
    html = page(conversation(base=7), conversation(base=8))
    assert "result: different (1 changed, 0 added, 0 removed)" in html
    assert '<span class="field">num</span>: <span class="old-value">7</span>' in html
    assert '<span class="new-value">8</span>' in html


def test_messages_only_one_side_sends_are_marked() -> None:
    base = conversation()
    extra = [*base[:2], fe("GET_QUEUE_NUM"), be("GET_QUEUE_NUM", {"value": 1}), *base[2:]]
    assert page(base, extra).count("only in new") >= 2 + 1  # two rows and the legend
    assert "result: different (0 changed, 2 added, 0 removed)" in page(base, extra)


def test_file_names_are_escaped_and_nothing_is_fetched() -> None:
    html = page(conversation(), conversation(), names=("<old>.vht", "new&.vht"))
    assert "&lt;old&gt;.vht" in html and "new&amp;.vht" in html
    assert "<script" not in html and "http" not in html
