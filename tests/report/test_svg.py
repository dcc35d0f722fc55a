"""The SVG of a report: well-formed, a lane per party, an arrow per message, text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from vhtrace.cli.rings import snapshot_texts
from vhtrace.report import model
from vhtrace.report.svg import render_svg
from vhtrace.trace.reader import TraceReader

TRACES = Path(__file__).resolve().parents[2] / "traces"
BLK = TRACES / "qemu-qsd-blk.vht"
NS = "{http://www.w3.org/2000/svg}"


def report_of(path: Path) -> model.Report:
    return model.build(TraceReader(path), rings=lambda: snapshot_texts(str(path)))


def test_it_parses_as_svg_with_the_title_and_a_lane_label_per_party() -> None:
    report = report_of(BLK)
    root = ElementTree.fromstring(render_svg(report))
    assert root.tag == f"{NS}svg"
    assert root.find(f"{NS}title").text == f"vhtrace report: {report.title}"  # type: ignore[union-attr]
    labels = {t.text for t in root.iter(f"{NS}text")}
    assert {"front-end", "back-end"} <= labels


def test_one_titled_group_per_message_in_order() -> None:
    report = report_of(BLK)
    root = ElementTree.fromstring(render_svg(report))
    titles = [g.find(f"{NS}title") for g in root.iter(f"{NS}g")]
    numbers = [int(t.text.split()[0][1:]) for t in titles if t is not None and t.text]
    assert numbers == [row[1] for row in report.message_rows()]


def test_its_height_grows_with_the_rows() -> None:
    report = report_of(BLK)
    height = int(ElementTree.fromstring(render_svg(report)).get("height") or 0)
    report.rows = report.rows[:10]
    shorter = int(ElementTree.fromstring(render_svg(report)).get("height") or 0)
    assert shorter < height


def test_a_hostile_title_is_escaped() -> None:
    report = report_of(BLK)
    report.title = '<script>alert("x")</script> & more'
    svg = render_svg(report)
    assert "<script>" not in svg
    ElementTree.fromstring(svg)  # still well-formed
