"""The report's chart as one SVG picture (``vhtrace report --svg``): for pasting into a
bug report or a mail, where no script runs. The same rows as the page, drawn whole,
with a tooltip (<title>) on each message."""

from __future__ import annotations

from html import escape

from vhtrace.report import model
from vhtrace.report.model import Report

ROW_H = 30
HEAD_H = 34
CHAR_W = 7.2
"""About the width of a character at 12px, to cut labels to the space between lanes."""
COLOURS = {"front-end": "#1f5fa8", "back-end": "#2e7d32", "back-end channel": "#7b3fa0"}
STREAM_COLOUR = "#8d6e00"
SEVERITY = {1: ("warning", "#e08a00", "#fff6e5"), 2: ("error", "#c62828", "#fdecea")}


def _lanes(report: Report) -> dict[str, float]:
    positions, x = {}, 190.0
    for index, name in enumerate(report.lanes):
        positions[name] = x
        x += 400 if index == 0 else 160
    return positions


def _duration(us: int) -> str:
    if us < 1000:
        return f"{us} µs"
    if us < 1_000_000:
        return f"{us / 1000:.{2 if us < 10_000 else 1}f} ms"
    return f"{us / 1e6:.3f} s"


def _cut(text: str, width: float) -> str:
    room = max(4, int(width / CHAR_W))
    return text if len(text) <= room else text[: room - 1] + "…"


def render_svg(report: Report) -> str:
    lanes = _lanes(report)
    side = max(lanes.values()) + 36
    width = side + 420
    height = HEAD_H + ROW_H * len(report.rows) + 10
    text = report.text
    fe = lanes["front-end"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" font-family="DejaVu Sans, Liberation Sans, '
        f'sans-serif" font-size="12">',
        f"<title>vhtrace report: {escape(report.title)}</title>",
        f'<rect width="{width:.0f}" height="{height}" fill="#fff"/>',
    ]
    for name, x in lanes.items():
        colour = COLOURS.get(name, STREAM_COLOUR)
        out.append(f'<line x1="{x}" y1="{HEAD_H}" x2="{x}" y2="{height}" stroke="#bbb" '
                   f'stroke-dasharray="3 3"/>')  # fmt: skip
        out.append(f'<rect x="{x - 60}" y="6" width="120" height="20" rx="3" fill="{colour}"/>'
                   f'<text x="{x}" y="21" fill="#fff" font-weight="bold" text-anchor="middle">'
                   f"{escape(name)}</text>")  # fmt: skip
    out.append('<text x="6" y="21" fill="#666">time (s)</text>')
    for index, row in enumerate(report.rows):
        top = HEAD_H + index * ROW_H
        kind = row[0]
        time = f'<text x="6" y="{top + 19}" fill="#666" font-size="11">{row[3] / 1e6:.6f}</text>'
        if kind == model.MESSAGE:
            out.append(_message(report, row, top, lanes, side, time))
        elif kind == model.SESSION:
            info = next((s for s in report.sessions if s["session"] == row[2]), {})
            end = (info.get("end") or {}).get("reason")
            label = f"Session {row[2]}: {info.get('messages', 0)} messages" + (
                f", ended: {end}" if end else ""
            )
            out.append(f'<rect x="0" y="{top}" width="{width:.0f}" height="{ROW_H}" '
                       f'fill="#e9eef6"/><text x="10" y="{top + 19}" font-weight="bold" '
                       f'fill="#234">{escape(label)}</text>')  # fmt: skip
        elif kind == model.GAP:
            marks = "".join(f'<path d="M{x - 6} {top + 11} l12 -4 M{x - 6} {top + 19} l12 -4" '
                            f'stroke="#888"/>' for x in lanes.values())  # fmt: skip
            mid = (fe + lanes["back-end"]) / 2
            out.append(f"{time}{marks}<text x=\"{mid}\" y=\"{top + 19}\" text-anchor=\"middle\" "
                       f'fill="#444">⋯ {_duration(row[4])} idle, collapsed ⋯</text>')  # fmt: skip
        elif kind == model.STREAM:
            start = lanes["front-end" if text(row[5]) == "frontend" else "back-end"]
            lane = text(row[4])
            out.append(f'{time}<line x1="{start}" y1="{top + 20}" x2="{lanes[lane]}" '
                       f'y2="{top + 20}" stroke="{STREAM_COLOUR}" stroke-dasharray="4 3"/>'
                       f'<text x="{side}" y="{top + 19}" fill="#666">{escape(lane)}: {row[6]} '
                       "bytes</text>")  # fmt: skip
        else:
            severity = row[5] if kind == model.FINDING else 0
            badge = ""
            if severity:
                _, _, back = SEVERITY[severity]
                badge = (f'<rect x="0" y="{top}" width="{width:.0f}" height="{ROW_H}" '
                         f'fill="{back}"/>')  # fmt: skip
            prefix = "◉ " if kind == model.SNAPSHOT else ""
            if severity:
                prefix = SEVERITY[severity][0] + ": "
            colour = "#0a6270" if kind == model.SNAPSHOT else "#666"
            label = _cut(prefix + text(row[4]), width - fe - 20)
            out.append(f'{badge}{time}<text x="{fe + 10}" y="{top + 19}" fill="{colour}" '
                       f'font-size="11">{escape(label)}</text>')  # fmt: skip
    out.append("</svg>\n")
    return "\n".join(out)


def _message(
    report: Report, row: list[int], top: int, lanes: dict[str, float], side: float, time: str
) -> str:
    text = report.text
    shape = report.shapes[row[5]]
    channel, sender = text(shape[0]), text(shape[1])
    far = lanes["back-end" if channel == "main" else "back-end channel"]
    fe = lanes["front-end"]
    start, end = (fe, far) if sender == "frontend" else (far, fe)
    lane = "front-end" if sender == "frontend" else "back-end" if channel == "main" else (
        "back-end channel")  # fmt: skip
    colour = COLOURS[lane]
    y = top + 23
    tip = end - 7 if end > start else end + 7
    parts = []
    severity = row[11]
    if severity:
        parts.append(f'<rect x="0" y="{top}" width="{side + 420:.0f}" height="{ROW_H}" '
                     f'fill="{SEVERITY[severity][2]}"/>')  # fmt: skip
    parts.append(time)
    parts.append(f'<text x="130" y="{top + 19}" text-anchor="end" font-size="11">{row[1]}</text>')
    name, summary = text(row[4]), text(shape[4])
    if row[8] != model.NONE:
        summary = f"{summary} {text(report.fds[row[8]][0])}".strip()
    room = abs(end - start) - 16
    label = _cut(f"{name} {summary}".strip(), room)
    bold, rest = label[: len(name)], label[len(name) :]
    tooltip = f"#{row[1]} {name} {summary}" + (f"\n{text(row[9])}" if row[9] != -1 else "")
    parts.append(f"<g><title>{escape(tooltip)}</title>"
                 f'<line x1="{start}" y1="{y}" x2="{tip}" y2="{y}" stroke="{colour}" '
                 f'stroke-width="1.6"/><polygon points="{end},{y} {tip},{y - 4} {tip},{y + 4}" '
                 f'fill="{colour}"/><text x="{min(start, end) + 8}" y="{top + 14}">'
                 f'<tspan font-weight="bold">{escape(bold)}</tspan><tspan fill="#555">'
                 f"{escape(rest)}</tspan></text></g>")  # fmt: skip
    x = side
    notes = []
    if severity:
        word, badge_colour, _ = SEVERITY[severity]
        notes.append(f'<rect x="{x}" y="{top + 8}" width="52" height="15" rx="3" '
                     f'fill="{badge_colour}"/><text x="{x + 26}" y="{top + 19}" fill="#fff" '
                     f'font-size="11" text-anchor="middle">{word}</text>')  # fmt: skip
        x += 60
    side_text = []
    if row[7] != model.NONE:
        side_text.append(f"↩ #{row[6]} in {_duration(row[7])}")
    if row[10] != model.NONE:
        side_text.append(text(row[10]))
    if side_text:
        notes.append(f'<text x="{x}" y="{top + 19}" fill="#666" font-size="11">'
                     f"{escape(_cut('   '.join(side_text), 400))}</text>")  # fmt: skip
    return "".join(parts + notes)
