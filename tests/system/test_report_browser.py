"""The report in a real browser: headless Chromium loads the report of real QEMU traces
(traces/, recorded from QEMU 7.2 with qemu-storage-daemon), runs its script, and the DOM
shows what the trace holds: one arrow per message, the finding markers on the messages
the analysis flags, the features the session negotiated; clicking (a #seq= link) shows
the message as ``show -V`` prints it; a screenshot is a real picture.

Skipped, with the reason, only when chromium is not installed (scripts/install-deps
installs it, so CI runs these)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report.browser import Dom, dump_dom, png_pixels, screenshot
from tests.support.synthetic import write_synthetic_trace
from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.cli.stats import as_dict, collect
from vhtrace.trace.reader import TraceReader

TRACES = Path(__file__).resolve().parents[2] / "traces"
POSTCOPY = TRACES / "qemu-qsd-postcopy-dst.vht"
BLK = TRACES / "qemu-qsd-blk.vht"


def vhtrace(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vhtrace", *map(str, argv)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def report(trace: Path, out: Path, *options: str) -> Path:
    result = vhtrace("report", trace, "-o", out, *options)
    assert result.returncode == 0, result.stderr
    return out


def analysed(trace: Path) -> list[AnalysedMessage]:
    reader = TraceReader(trace)
    items = analyser_for(reader.header).run(reader)
    return [item for item in items if isinstance(item, AnalysedMessage)]


def arrows(dom: Dom) -> list[int]:
    return [int(g.attrs["data-seq"]) for g in dom.select("g", "arrow")]


@pytest.mark.parametrize("trace", [POSTCOPY, BLK], ids=lambda p: p.name)
def test_one_arrow_per_message_of_a_real_trace(trace: Path, tmp_path: Path) -> None:
    page = report(trace, tmp_path / "report.html")
    dom = Dom(dump_dom(page.as_uri()))
    assert dom.by_id("canvas")  # the script ran and drew
    assert arrows(dom) == [item.record.seq for item in analysed(trace)]


def test_findings_are_marked_on_their_messages(tmp_path: Path) -> None:
    flagged = {item.record.seq: item.analysis.findings for item in analysed(POSTCOPY)
               if item.analysis.findings}  # fmt: skip
    assert flagged, "the postcopy trace has warnings (ADD_MEM_REG with CONFIGURE_MEM_SLOTS)"
    dom = Dom(dump_dom(report(POSTCOPY, tmp_path / "report.html").as_uri()))
    markers = {int(m.attrs["data-seq"]): m for m in dom.select("span", "finding")}
    assert set(markers) == set(flagged)
    for seq, findings in flagged.items():
        worst = "error" if any(f.severity == "error" for f in findings) else "warning"
        assert worst in markers[seq].classes
    listed = " ".join(li.text for li in dom.select("li", "warning"))
    for findings in flagged.values():
        assert all(f.text in listed for f in findings)


def test_the_features_table_is_what_stats_says(tmp_path: Path) -> None:
    summary = as_dict(TraceReader(BLK).header, collect(TraceReader(BLK)), None, None)
    features = summary["sessions"][0]["features"]
    dom = Dom(dump_dom(report(BLK, tmp_path / "report.html").as_uri()))
    tables = dom.select("table", "features")
    assert [t.attrs["data-session"] for t in tables] == ["1"]
    text = tables[0].text
    for key in ("virtio_set_by_frontend", "protocol_set_by_frontend"):
        assert f"0x{features[key]['value']:x}" in text
        assert " ".join(features[key]["names"]) in text


def test_a_selected_message_shows_every_field_as_show_v(tmp_path: Path) -> None:
    page = report(POSTCOPY, tmp_path / "report.html")
    for seq in (20, 26):  # the userfaultfd reply (an fd), a message with a finding
        dom = Dom(dump_dom(page.as_uri() + f"#seq={seq}"))
        shown = vhtrace("show", "-V", "--range", seq, POSTCOPY).stdout.splitlines()
        detail = dom.by_id("detail").text.splitlines()
        assert detail[1:] == shown[1:], f"#{seq}: the page's fields differ from show -V"
        selected = [e for e in dom.select("div", "selected")]
        assert [e.attrs["data-seq"] for e in selected] == [str(seq)]


def test_the_page_filters_as_show_does(tmp_path: Path) -> None:
    page = report(BLK, tmp_path / "report.html")
    dom = Dom(dump_dom(page.as_uri() + "#request=SET_VRING_*"))
    expected = [int(line.split()[0]) for line in
                vhtrace("show", "-r", "SET_VRING_*", BLK).stdout.splitlines()]  # fmt: skip
    assert arrows(dom) == expected
    dom = Dom(dump_dom(report(BLK, tmp_path / "cli.html", "-r", "SET_VRING_*").as_uri()))
    assert arrows(dom) == expected


def test_snapshot_markers_show_the_rings(tmp_path: Path) -> None:
    page = report(BLK, tmp_path / "report.html")
    dom = Dom(dump_dom(page.as_uri()))
    markers = dom.select("div", "snapshot")
    rings = vhtrace("rings", BLK).stdout
    assert len(markers) == rings.count("\nsnapshot ") + rings.startswith("snapshot ")
    assert all("snapshot" in m.text for m in markers)
    # clicking one (a #snapshot= link does it) shows what `vhtrace rings --at N` prints
    dom = Dom(dump_dom(page.as_uri() + "#snapshot=2"))
    expected = vhtrace("rings", "--at", 2, BLK).stdout.rstrip("\n")
    assert "vring 0" in expected
    assert dom.by_id("detail").text == expected


def test_a_screenshot_of_a_real_trace_is_a_chart(tmp_path: Path) -> None:
    page = report(POSTCOPY, tmp_path / "report.html")
    png = screenshot(page.as_uri(), tmp_path / "report.png", window="1200,700")
    width, height, rows = png_pixels(png)
    assert (width, height) == (1200, 700)
    colours = {row[i : i + 3] for row in rows[::7] for i in range(0, len(row), 4 * 5)}
    assert len(colours) > 50, "a blank or one-colour page"
    front_end_blue = bytes((0x1F, 0x5F, 0xA8))
    assert any(front_end_blue in row for row in rows), "no front-end arrow drawn"


def test_100000_messages_scroll_without_drawing_them_all(tmp_path: Path) -> None:
    trace = write_synthetic_trace(tmp_path / "long.vht", 100_000)
    page = report(trace, tmp_path / "long.html")
    dom = Dom(dump_dom(page.as_uri() + "#seq=77777"))
    drawn = arrows(dom)
    assert 77777 in drawn
    assert 0 < len(drawn) < 500, f"{len(drawn)} arrows in the DOM: not virtual"
    assert dom.by_id("shown").text.startswith("10")  # "10x,xxx of 10x,xxx rows shown"
    body = dom.select("body")[0]
    assert body.attrs.get("data-ready") == "1", "the script did not finish"


def test_the_svg_is_a_picture_of_every_message(tmp_path: Path) -> None:
    svg = report(POSTCOPY, tmp_path / "chart.svg", "--svg")
    png = screenshot(svg.as_uri(), tmp_path / "chart.png", window="1100,1200")
    width, _, rows = png_pixels(png)
    assert width == 1100
    assert any(bytes((0x2E, 0x7D, 0x32)) in row for row in rows), "no back-end arrow drawn"


def test_diff_html_lines_up_two_real_traces_as_diff_does(tmp_path: Path) -> None:
    old, new = BLK, TRACES / "qemu-qsd-reconnect.vht"
    page = tmp_path / "diff.html"
    result = vhtrace("diff", old, new, "--html", page)
    assert result.returncode == 1, result.stderr  # they differ
    data = json.loads(vhtrace("diff", "--json", old, new).stdout)
    dom = Dom(dump_dom(page.as_uri()))
    rows = [tr for tr in dom.select("tr") if "data-kind" in tr.attrs]
    kinds = [tr.attrs["data-kind"] for tr in rows]
    for kind, count in data["counts"].items():
        assert kinds.count(kind) == count, kind
    compared = sum(s["compared"] for s in data["sessions"])
    assert len(rows) == compared + data["counts"]["added"] + data["counts"]["removed"]
    changed = [tr for tr in rows if tr.attrs["data-kind"] == "changed"]
    expected = [c for s in data["sessions"] for c in s["changes"] if c["kind"] == "changed"]
    for tr, change in zip(changed, expected, strict=True):
        assert all(d["field"] in tr.text for d in change["differences"])
    assert dom.by_id("result").text.startswith("result: different")


def test_hostile_text_from_the_wire_stays_text(tmp_path: Path) -> None:
    """An fd's name comes from the peer: markup in it must not become markup in the page."""
    from tests.support import synthetic
    from vhtrace.trace.writer import TraceWriter, make_header

    hostile = "</script><img id=pwned src=x onerror=alert(1)><!--"
    path = tmp_path / "hostile.vht"
    header = make_header(device="blk")
    writer = TraceWriter(str(path), header)
    message = next(m for m in synthetic.blk_session() if m.fd_kinds == ("memfd",))
    meta = {**synthetic.fd_meta("memfd"), "name": hostile}
    writer.message(1, header["mono_ns"], header["wall_ns"], 1, message.channel.value,
                   message.sender.value, message.frame.raw, [meta])  # fmt: skip
    writer.close({})
    page = report(path, tmp_path / "hostile.html", "--title", hostile)
    dom = Dom(dump_dom(page.as_uri() + "#seq=1"))
    assert not [e for e in dom.elements if e.attrs.get("id") == "pwned"]
    assert hostile in dom.by_id("detail").text  # shown, as text
    assert arrows(dom) == [1]


def test_repeated_runs_fold_into_one_row_with_their_count(tmp_path: Path) -> None:
    """Back-to-back identical sessions: drawn once, the repeats one row; a link into the
    folded part unfolds it."""
    trace = write_synthetic_trace(tmp_path / "repeats.vht", 3_000)
    page = report(trace, tmp_path / "repeats.html", "--fold")
    dom = Dom(dump_dom(page.as_uri()))
    folds = dom.select("div", "fold")
    assert len(folds) == 1
    drawn = arrows(dom)
    session = len([m for m in analysed(trace) if m.record.session == 1])
    assert drawn[:session] == list(range(1, session + 1))
    sessions = max(m.record.session for m in analysed(trace))
    # every whole session after the first is in the fold (the last, cut short, differs)
    assert f"{sessions - 2:,} more times" in folds[0].text
    assert len(drawn) < 3 * session
    inside = session * 10 + 5
    assert inside not in drawn
    dom = Dom(dump_dom(page.as_uri() + f"#seq={inside}"))
    assert inside in arrows(dom)
    assert [e.attrs["data-seq"] for e in dom.select("div", "selected")] == [str(inside)]
    unfolded = Dom(dump_dom(page.as_uri() + "#fold=0"))
    assert arrows(unfolded) == [m.record.seq for m in analysed(trace)]
