"""``vhtrace diff OLD NEW --html``: the two conversations side by side in one HTML page,
lined up as ``diff`` lines them up (tracediff.align_session), what differs highlighted:
a changed message with the fields that changed, a message only one side sends in the
colour of its side. Self-contained: inline style, no script, nothing fetched."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from vhtrace.render import counted
from vhtrace.tracediff import Aligned, Kind, Message, SessionDiff

_STYLE = """
body { font: 13px/1.35 system-ui, "DejaVu Sans", sans-serif; margin: 12px; color: #222; }
h1 { font-size: 16px; margin: 0 0 4px 0; } h2 { font-size: 14px; margin: 18px 0 6px 0; }
.facts { color: #555; margin-bottom: 8px; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
td, th { border-bottom: 1px solid #e4e4e4; padding: 2px 6px; vertical-align: top;
         overflow: hidden; text-overflow: ellipsis; }
th { text-align: left; background: #f0f0f0; position: sticky; top: 0; }
td.seq { width: 48px; text-align: right; font-family: "DejaVu Sans Mono", monospace; }
td.dir { width: 64px; } col.seq { width: 52px; } col.dir { width: 70px; }
.sum { color: #555; }
tr.changed td.side { background: #fff4cc; } tr.added td.new { background: #dff5df; }
tr.removed td.old { background: #fbe3e3; } tr.changed td.what { background: #fff4cc; }
td.what { font-size: 12px; } .field { font-weight: 600; }
.old-value { color: #b00020; } .new-value { color: #1b5e20; } .note { color: #666; }
.legend span { padding: 1px 6px; margin-right: 8px; border-radius: 3px; }
"""
_COLOURS = {("main", "frontend"): "#1f5fa8", ("main", "backend"): "#2e7d32"}
_BACKEND_CHANNEL = "#7b3fa0"


def _arrow(message: Message | None) -> str:
    """A small arrow: left to right from the front-end, right to left from the back-end."""
    if message is None:
        return ""
    view = message.view
    colour = _COLOURS.get((str(view.channel), str(view.sender)), _BACKEND_CHANNEL)
    if str(view.sender) == "frontend":
        line, head = "M4 8 H50", "50,4 58,8 50,12"
    else:
        line, head = "M60 8 H14", "14,4 6,8 14,12"
    return (f'<svg width="62" height="16"><path d="{line}" stroke="{colour}" stroke-width="1.6"/>'
            f'<polygon points="{head}" fill="{colour}"/></svg>')  # fmt: skip


def _cells(message: Message | None, side: str) -> str:
    if message is None:
        return f'<td class="seq {side} side"></td><td class="dir {side} side"></td>' \
               f'<td class="{side} side"></td>'  # fmt: skip
    view = message.view
    fds = f" fds={','.join(view.fd_kinds)}" if view.fd_kinds else ""
    return (f'<td class="seq {side} side">{message.seq}</td><td class="dir {side} side">'
            f'{_arrow(message)}</td><td class="{side} side" title="{escape(view.summary)}">'
            f'<b>{escape(view.label)}</b> <span class="sum">{escape(view.summary)}{fds}'
            "</span></td>")  # fmt: skip


def _what(line: Aligned) -> str:
    change = line.change
    if change is None:
        return ""
    if change.kind is Kind.ADDED:
        return "only in new"
    if change.kind is Kind.REMOVED:
        return "only in old"
    parts = []
    for difference in change.differences:
        note = f' <span class="note">{escape(difference.note)}</span>' if difference.note else ""
        old = escape(str(difference.recorded))
        new = escape(str(difference.live))
        parts.append(f'<span class="field">{escape(difference.field)}</span>: '
                     f'<span class="old-value">{old}</span> → '
                     f'<span class="new-value">{new}</span>{note}')  # fmt: skip
    return "<br>".join(parts)


def _session(result: SessionDiff) -> str:
    def number(value: int | None) -> str:
        return "(none)" if value is None else str(value)

    rows = []
    for line in result.lines:
        kind = str(line.change.kind) if line.change else "same"
        anchor = line.new.seq if line.new else line.old.seq if line.old else 0
        rows.append(f'<tr class="{kind}" data-kind="{kind}" id="s{number(result.new_session)}'
                    f'-{anchor}">{_cells(line.old, "old")}{_cells(line.new, "new")}'
                    f'<td class="what">{_what(line)}</td></tr>')  # fmt: skip
    return (f"<h2>Session {number(result.old_session)} → {number(result.new_session)}: "
            f"{result.compared} messages compared, {counted(len(result.changes), 'change')}</h2>"
            '<table><colgroup><col class="seq"><col class="dir"><col><col class="seq">'
            '<col class="dir"><col><col style="width:28%"></colgroup>'
            "<tr><th>old #</th><th></th><th>old</th><th>new #</th><th></th><th>new</th>"
            f"<th>what differs</th></tr>{''.join(rows)}</table>")  # fmt: skip


def render_diff_page(
    old: str, new: str, results: Sequence[SessionDiff], totals: dict[str, int]
) -> str:
    different = any(totals.values())
    words = ", ".join(f"{n} {kind}" for kind, n in totals.items())
    sessions = "".join(_session(result) for result in results)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="vhtrace diff">
<title>vhtrace diff: {escape(old)} → {escape(new)}</title><style>{_STYLE}</style></head>
<body><h1>vhtrace diff: {escape(old)} → {escape(new)}</h1>
<div class="facts" id="result">result: {"different" if different else "same"} ({words})</div>
<div class="legend"><span style="background:#fff4cc">changed</span>
<span style="background:#dff5df">only in new</span><span style="background:#fbe3e3">only in
old</span> front-end → back-end in blue, back-end → front-end in green, the back-end channel
in purple; the rules of diff apply (addresses and ring positions do not count unless
asked).</div>
{sessions}
</body></html>
"""
