"""Two recorded conversations side by side: what changed from the old one to the new one.

The question behind it: "it worked with QEMU 7.2 and the old back-end, it breaks with
the new one; what do they say differently?". Sessions are paired in order (the first
of the old trace with the first of the new, ...). Within a pair the messages are lined
up by what they are (channel, sender, role, request) with difflib, so that a message
only one side sends shows as added or removed and the rest stays aligned; aligned
messages are compared field by field by replay's matcher, with replay's rules (the
front-end's addresses and the ring positions differ between any two runs and do not
count unless asked). Pure: views in, changes out.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vhtrace.replay.compare import DIFF_SIDES, Difference, MessageView, compare
from vhtrace.replay.rules import Rules


class Kind(enum.StrEnum):
    CHANGED = "changed"
    ADDED = "added"
    """Only in the new trace."""
    REMOVED = "removed"
    """Only in the old trace."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message of one trace: its number and what comparison looks at."""

    seq: int
    view: MessageView


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    old: Message | None
    new: Message | None
    differences: tuple[Difference, ...] = ()
    """For CHANGED: the differences that count."""

    @property
    def view(self) -> MessageView:
        """The message as the new trace has it (the old one's if it is only there)."""
        either = self.new or self.old
        assert either is not None
        return either.view

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "old_seq": self.old.seq if self.old else None,
            "new_seq": self.new.seq if self.new else None,
            "label": self.view.label,
            "summary": self.view.summary,
            "differences": [_old_new(d) for d in self.differences],
        }


@dataclass(slots=True)
class SessionDiff:
    old_session: int | None
    new_session: int | None
    changes: list[Change] = field(default_factory=list)
    compared: int = 0
    """Message pairs compared field by field."""
    ignored: list[tuple[int, int, Difference]] = field(default_factory=list)
    """(old seq, new seq, difference) the rules excused."""
    lines: list[Aligned] = field(default_factory=list)
    """Both sessions lined up (the side-by-side view of ``diff --html``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_session": self.old_session,
            "new_session": self.new_session,
            "compared": self.compared,
            "changes": [c.to_dict() for c in self.changes],
            "ignored": [
                {"old_seq": old, "new_seq": new, **_old_new(d)} for old, new, d in self.ignored
            ],
        }


def _key(message: Message) -> tuple[Any, ...]:
    """What a message is, for lining up: a ring's messages by their ring too, so that the
    second ring's setup added to a trace shows as added, not as ring 0's changing."""
    view = message.view
    ring = None
    if view.layout is not None and view.layout.startswith("vring") and view.fields:
        ring = view.fields.get("index")
    return (view.channel, view.sender, view.role, view.request, ring)


def _old_new(difference: Difference) -> dict[str, Any]:
    """A difference as diff names its sides: old and new (replay's are recorded and live)."""
    out: dict[str, Any] = {
        "field": difference.field,
        "old": difference.recorded,
        "new": difference.live,
    }
    if difference.note:
        out["note"] = difference.note
    if difference.ignored:
        out["ignored"] = difference.ignored
    return out


@dataclass(frozen=True, slots=True)
class Aligned:
    """One line of the side-by-side view: a message of each trace lined up, or of one."""

    old: Message | None
    new: Message | None
    change: Change | None = None
    """What differs (None: the same, or only excused differences)."""


def align_session(
    old: Sequence[Message], new: Sequence[Message], rules: Rules
) -> tuple[list[Aligned], list[tuple[int, int, Difference]]]:
    """Both sessions' messages lined up as diff lines them up, with what changed on each
    line; and the differences the rules excused (old seq, new seq, difference)."""
    lines: list[Aligned] = []
    ignored: list[tuple[int, int, Difference]] = []
    matcher = difflib.SequenceMatcher(
        a=[_key(m) for m in old], b=[_key(m) for m in new], autojunk=False
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for before, after in zip(old[i1:i2], new[j1:j2], strict=True):
                differences = compare(before.view, after.view, rules, DIFF_SIDES)
                counted = tuple(d for d in differences if d.ignored is None)
                ignored += [(before.seq, after.seq, d) for d in differences if d.ignored]
                change = Change(Kind.CHANGED, before, after, counted) if counted else None
                lines.append(Aligned(before, after, change))
            continue
        lines += [Aligned(m, None, Change(Kind.REMOVED, m, None)) for m in old[i1:i2]]
        lines += [Aligned(None, m, Change(Kind.ADDED, None, m)) for m in new[j1:j2]]
    return lines, ignored


def diff_session(old: Sequence[Message], new: Sequence[Message], rules: Rules) -> SessionDiff:
    """The changes from one session's messages to the other's (numbers filled in later)."""
    lines, ignored = align_session(old, new, rules)
    result = SessionDiff(None, None, ignored=ignored, lines=lines)
    result.compared = sum(1 for line in lines if line.old is not None and line.new is not None)
    result.changes = [line.change for line in lines if line.change is not None]
    return result


def pair_sessions(
    old: dict[int, list[Message]], new: dict[int, list[Message]]
) -> list[tuple[int | None, int | None]]:
    """Sessions paired in order: (old number, new number), None where one trace has fewer."""
    old_numbers, new_numbers = list(old), list(new)
    return [
        (
            old_numbers[i] if i < len(old_numbers) else None,
            new_numbers[i] if i < len(new_numbers) else None,
        )
        for i in range(max(len(old_numbers), len(new_numbers)))
    ]


def diff_traces(
    old: dict[int, list[Message]], new: dict[int, list[Message]], rules: Rules
) -> list[SessionDiff]:
    """Sessions paired in order; a session only one trace has is all added or removed."""
    results = []
    for old_number, new_number in pair_sessions(old, new):
        result = diff_session(
            old.get(old_number, []) if old_number is not None else [],
            new.get(new_number, []) if new_number is not None else [],
            rules,
        )
        result.old_session, result.new_session = old_number, new_number
        results.append(result)
    return results


def counts(results: Sequence[SessionDiff]) -> dict[str, int]:
    """How many changes of each kind, over all sessions."""
    out = {str(kind): 0 for kind in Kind}
    for result in results:
        for change in result.changes:
            out[str(change.kind)] += 1
    return out


def render_text(results: Sequence[SessionDiff], *, verbose: bool = False) -> list[str]:
    """The changes, session by session, as ``vhtrace diff`` prints them."""
    lines: list[str] = []
    for result in results:
        sessions = f"{_number(result.old_session)} -> {_number(result.new_session)}"
        lines.append(f"session {sessions}: {result.compared} messages compared, "
                     f"{len(result.changes)} changes")  # fmt: skip
        for change in result.changes:
            old = f"#{change.old.seq}" if change.old else ""
            new = f"#{change.new.seq}" if change.new else ""
            arrow = "->" if change.old and change.new else "  "
            where = f"{old:>6} {arrow} {new:<6}"
            summary = change.view.summary
            tail = f"  {summary}" if summary and change.kind is not Kind.CHANGED else ""
            only = _ONLY.get(change.kind, "")
            lines.append(f"  {change.kind:<8}{where} {change.view.label}{only}{tail}")
            for difference in change.differences:
                lines.append(f"      {difference.field}: old {difference.recorded}, "
                             f"new {difference.live}")  # fmt: skip
                if difference.note:
                    lines.append(f"        {difference.note}")
        if verbose:
            for old_seq, new_seq, difference in result.ignored:
                lines.append(f"  ignored  #{old_seq} -> #{new_seq} {difference.field}: "
                             f"old {difference.recorded}, new {difference.live} "
                             f"({difference.ignored})")  # fmt: skip
    return lines


_ONLY = {Kind.ADDED: " (only in new)", Kind.REMOVED: " (only in old)"}


def _number(session: int | None) -> str:
    return "(none)" if session is None else str(session)
