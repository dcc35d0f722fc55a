"""Two conversations side by side: aligned messages compared, the others added or removed."""

from __future__ import annotations

from tests.replay.builders import Msg, analysed, be, conversation, fe
from vhtrace.analysis import AnalysedMessage
from vhtrace.replay.compare import view
from vhtrace.replay.rules import build_rules
from vhtrace.tracediff import Kind, Message, counts, diff_traces, pair_sessions, render_text

RULES = build_rules()


def messages(msgs: list[Msg]) -> list[Message]:
    items = [i for i in analysed(msgs) if isinstance(i, AnalysedMessage)]
    return [Message(i.record.seq, view(i.wire, i.analysis, i.record.fds)) for i in items]


def test_the_same_conversation_twice_has_no_change() -> None:
    old = messages(conversation())
    [result] = diff_traces({1: old}, {1: messages(conversation())}, RULES)
    assert result.changes == [] and result.compared == len(old)
    assert counts([result]) == {"changed": 0, "added": 0, "removed": 0}


def test_a_different_field_is_a_change_naming_it() -> None:
    old, new = messages(conversation(base=7)), messages(conversation(base=8))
    rules = build_rules(defaults=False)
    [result] = diff_traces({1: old}, {1: new}, rules)
    [change] = result.changes
    assert change.kind is Kind.CHANGED and change.view.name == "GET_VRING_BASE"
    assert [d.field for d in change.differences] == ["num", "next_avail"]  # the same u32, twice
    assert change.to_dict()["differences"][0] == {"field": "num", "old": "7", "new": "8"}
    assert change.old is not None and change.new is not None and change.old.seq == change.new.seq


def test_a_message_only_one_side_sends_is_added_or_removed_and_the_rest_stays_aligned() -> None:
    base = conversation()
    extra = [*base[:2], fe("GET_QUEUE_NUM"), be("GET_QUEUE_NUM", {"value": 1}), *base[2:]]
    [result] = diff_traces({1: messages(base)}, {1: messages(extra)}, RULES)
    assert [c.kind for c in result.changes] == [Kind.ADDED, Kind.ADDED]
    assert [c.new.seq for c in result.changes if c.new] == [3, 4]
    [back] = diff_traces({1: messages(extra)}, {1: messages(base)}, RULES)
    assert [c.kind for c in back.changes] == [Kind.REMOVED, Kind.REMOVED]
    assert result.compared == len(base)


def test_sessions_pair_in_order_and_a_missing_one_is_all_added() -> None:
    assert pair_sessions({1: [], 2: []}, {5: []}) == [(1, 5), (2, None)]
    one = messages(conversation())
    results = diff_traces({1: one}, {1: one, 2: one}, RULES)
    assert (results[1].old_session, results[1].new_session) == (None, 2)
    assert {c.kind for c in results[1].changes} == {Kind.ADDED}
    assert counts(results)["added"] == len(one)


def test_the_text_names_sessions_changes_and_fields() -> None:
    old, new = messages(conversation(base=7)), messages(conversation(base=8))
    lines = render_text(diff_traces({1: old}, {1: new}, build_rules(defaults=False)))
    assert lines[0] == f"session 1 -> 1: {len(old)} messages compared, 1 changes"
    assert lines[1].split()[:2] == ["changed", f"#{len(old)}"]  # the GET_VRING_BASE reply
    assert lines[2] == "      num: old 7, new 8"
    only_new = render_text(diff_traces({}, {3: old[:1]}, RULES))
    assert only_new[0] == "session (none) -> 3: 0 messages compared, 1 changes"
    assert only_new[1].endswith("(only in new)")
