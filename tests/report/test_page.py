"""The report page: self-contained, its data the model's, nothing in it can end a script."""

from __future__ import annotations

import json
import re
from pathlib import Path

from vhtrace.cli.rings import snapshot_texts
from vhtrace.report import model
from vhtrace.report.page import features_table, render_page
from vhtrace.trace.reader import TraceReader

BLK = Path(__file__).resolve().parents[2] / "traces" / "qemu-qsd-blk.vht"


def report_of(path: Path) -> model.Report:
    return model.build(TraceReader(path), rings=lambda: snapshot_texts(str(path)))


def embedded_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert found is not None
    return json.loads(found.group(1))


def test_the_page_carries_the_models_data_and_fetches_nothing() -> None:
    report = report_of(BLK)
    page = render_page(report)
    assert page.startswith("<!doctype html>")
    assert embedded_data(page) == json.loads(json.dumps(report.as_json()))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert f"<title>vhtrace report: {report.title}</title>" in page


def test_facts_count_messages_sessions_and_findings() -> None:
    report = report_of(BLK)
    page = render_page(report)
    assert f"{report.messages} messages, 1 session" in page
    report.problem = "cut <short>"
    assert "[DAMAGED: cut &lt;short&gt;]" in render_page(report)


def test_text_from_the_trace_cannot_end_the_data_script() -> None:
    report = report_of(BLK)
    report.title = "</script><script>alert(1)</script>"
    page = render_page(report)
    assert "<script>alert(1)" not in page
    found = re.search(r'id="data">(.*?)</script>', page, re.S)
    assert found is not None and "<" not in found.group(1)


def test_a_session_without_features_says_so() -> None:
    assert features_table({"session": 1, "features": {}}) == "<p>No features negotiated.</p>"
    session = report_of(BLK).sessions[0]
    table = features_table(session)
    assert table.startswith('<table class="features" data-session="1">')
    assert "queues, regions, rings" in table
