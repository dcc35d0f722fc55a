"""The report as one self-contained HTML page: the data as JSON, the style and the
drawing script inlined (report.css, report.js), nothing fetched from anywhere.

The summary beside the chart (findings, each session's features and milestones) is
plain HTML made here; the chart is drawn by the script from the data, so that a long
trace is drawn only where it is looked at.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from vhtrace.render import counted
from vhtrace.report.model import Report

SESSIONS_DETAILED = 20
"""Sessions whose timeline is listed; the features of the others are grouped when equal."""

_FEATURE_ROWS = (
    ("virtio offered (back-end)", "virtio_offered_by_backend"),
    ("virtio set (front-end)", "virtio_set_by_frontend"),
    ("virtio not taken", "virtio_not_taken"),
    ("protocol offered (back-end)", "protocol_offered_by_backend"),
    ("protocol set (front-end)", "protocol_set_by_frontend"),
    ("protocol not taken", "protocol_not_taken"),
)
"""The rows of stats' feature table, in its order and words."""


def _asset(name: str) -> str:
    return resources.files("vhtrace.report").joinpath(name).read_text(encoding="utf-8")


def _json_for_script(data: Any) -> str:
    """JSON that cannot end (or otherwise escape) the <script> element it sits in: no "<"
    at all (it only occurs inside strings, where \\u003c means the same)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def features_table(session: dict[str, Any]) -> str:
    """One session's negotiated features, as ``vhtrace stats`` lists them."""
    features = session["features"]
    if not features:
        return "<p>No features negotiated.</p>"
    rows = []
    for label, key in _FEATURE_ROWS:
        value = features.get(key)
        if value is None and "not taken" in label:
            continue
        if value is None:
            rows.append(f"<tr><th>{label}</th><td class=hex>(not seen)</td><td></td></tr>")
            continue
        names = " ".join(value["names"]) or "-"
        rows.append(f"<tr><th>{label}</th><td class=hex>0x{value['value']:x}</td>"
                    f"<td>{html.escape(names)}</td></tr>")  # fmt: skip
    if features.get("needs_qemu"):
        needs = ", ".join(f"{n} (QEMU {r})" for n, r in features["needs_qemu"].items())
        rows.append(f"<tr><th>needs a front-end at least</th><td colspan=2>"
                    f"{html.escape(needs)}</td></tr>")  # fmt: skip
    rows.append(
        f"<tr><th>queues, regions, rings</th><td colspan=2>queues {features['queue_num']}, "
        f"memory regions {features['regions']}, rings used {features['rings']}, postcopy "
        f"{html.escape(str(features['postcopy']))}</td></tr>"
    )
    number = session["session"]
    return f'<table class="features" data-session="{number}">{"".join(rows)}</table>'


def _timeline(session: dict[str, Any]) -> str:
    items = []
    for entry in session["timeline"]:
        when = "?" if entry["time"] is None else f"{entry['time']:.6f}s"
        seq = entry["seq"]
        where = f' <a href="#seq={seq}">#{seq}</a>' if seq is not None else ""
        items.append(f"<li>{when}{where} {html.escape(entry['what'])}</li>")
    return f'<ul class="milestones">{"".join(items)}</ul>'


def _sessions(report: Report) -> str:
    parts = []
    groups: dict[str, list[int]] = {}
    for index, session in enumerate(report.sessions):
        number = session["session"]
        table = features_table(session)
        if index < SESSIONS_DETAILED:
            end = (session["end"] or {}).get("reason")
            parts.append(f'<h2 id="session-{number}">Session {number}: '
                         f'{counted(session["messages"], "message")}'
                         f'{", ended: " + html.escape(str(end)) if end else ""}</h2>'
                         f"{table}<h2>Milestones (session {number})</h2>"
                         f"{_timeline(session)}")  # fmt: skip
        else:
            groups.setdefault(table, []).append(number)
    for table, numbers in groups.items():
        parts.append(f"<h2>{counted(len(numbers), 'more session')} ({numbers[0]} to "
                     f"{numbers[-1]}) with these features</h2>{table}")  # fmt: skip
    return "".join(parts)


def _findings(report: Report) -> str:
    if not report.findings:
        return "<p>No findings.</p>"
    items = []
    for finding in report.findings[:500]:
        seq = finding.get("seq")
        where = f'<a href="#seq={seq}">#{seq}</a> ' if seq is not None else ""
        items.append(f'<li class="{finding["severity"]}">[{finding["session"]}] '
                     f"{finding['severity']}: {where}{html.escape(finding['request'] or '')} "
                     f"{html.escape(finding['text'])}</li>")  # fmt: skip
    more = len(report.findings) - 500
    tail = f"<li>... and {more} more</li>" if more > 0 else ""
    return f'<ul class="findings">{"".join(items)}{tail}</ul>'


def _options(values: list[str], label: str) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    return f'<option value="">{label}</option>{options}'


def render_page(report: Report) -> str:
    """The whole page."""
    trace = report.trace
    errors = sum(1 for f in report.findings if f["severity"] == "error")
    warnings = len(report.findings) - errors
    facts = (
        f"{html.escape(str(trace.get('tool')))} on {html.escape(str(trace.get('host')))} at "
        f"{trace['when']}, {counted(report.messages, 'message')}, "
        f"{counted(len(report.sessions), 'session')}, {counted(errors, 'error')}, "
        f"{counted(warnings, 'warning')}"
    )
    if report.filtered:
        facts += " (filtered: only what the command line's filters let through)"
    if report.problem:
        facts += f" [DAMAGED: {html.escape(report.problem)}]"
    channels = ["main"] + (["backend"] if "back-end channel" in report.lanes else [])
    sessions = [str(s["session"]) for s in report.sessions]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="vhtrace report">
<title>vhtrace report: {html.escape(report.title)}</title>
<style>{_asset("report.css")}</style></head>
<body>
<header><h1>vhtrace report: {html.escape(report.title)}</h1>
<div class="facts">{facts}</div>
<form id="filters">
<label>request <input type="text" name="request" placeholder="SET_VRING_*, GET_FEATURES"></label>
<select name="channel">{_options(channels, "any channel")}</select>
<select name="sender">{_options(["frontend", "backend"], "from either side")}</select>
<select name="session">{_options(sessions, "every session")}</select>
<label><input type="checkbox" name="findings"> only messages with findings</label>
<label title="a run of the same exchange repeated at once is drawn once, with its count">\
<input type="checkbox" name="fold"{" checked" if report.fold else ""}> fold repeats</label>
<span id="shown"></span>
</form></header>
<main>
<div id="chart"><div id="lanehead"></div><div id="canvas"></div></div>
<aside>
<h2>Selected (click a message; show -V)</h2><pre id="detail">Click a message to see every \
decoded field and its fds; a snapshot marker to see its rings.</pre>
<h2>Findings</h2>{_findings(report)}
{_sessions(report)}
</aside>
</main>
<script type="application/json" id="data">{_json_for_script(report.as_json())}</script>
<script>{_asset("report.js")}</script>
</body></html>
"""
