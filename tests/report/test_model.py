"""The report's model built from a trace: rows, pairing, findings, gaps, milestones, filters,
snapshots, streams (what vhtrace report and the SVG draw)."""

from __future__ import annotations

import json
from pathlib import Path

from vhtrace.cli.filters import MessageFilter, RequestFilter
from vhtrace.cli.rings import snapshot_texts
from vhtrace.report import model
from vhtrace.trace.reader import TraceReader

TRACES = Path(__file__).resolve().parents[2] / "traces"

BLK = TRACES / "qemu-qsd-blk.vht"

POSTCOPY = TRACES / "qemu-qsd-postcopy-dst.vht"


def build(path: Path, **options: object) -> model.Report:
    return model.build(TraceReader(path), rings=lambda: snapshot_texts(str(path)), **options)


def show_json(run_cli, *argv: object) -> list[dict]:
    code, out, _ = run_cli("show", "--json", *argv)
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def by_kind(report: model.Report, kind: int) -> list[list[int]]:
    return [row for row in report.rows if row[0] == kind]


def test_a_row_per_message_with_shows_names_and_summaries(run_cli) -> None:
    report = build(BLK)
    messages = [m for m in show_json(run_cli, BLK) if m["type"] == "message"]
    rows = report.message_rows()
    assert [r[1] for r in rows] == [m["seq"] for m in messages]
    for row, message in zip(rows, messages, strict=True):
        shape = report.shapes[row[5]]
        assert report.text(shape[0]) == message["channel"]
        assert report.text(shape[1]) == message["from"]
        assert report.text(shape[4]) == message["summary"]
        assert report.text(row[4]).startswith(message["request"])
        assert row[3] == round(message["time"] * 1e6) or abs(row[3] - message["time"] * 1e6) < 2


def test_replies_point_at_their_request_with_the_round_trip(run_cli) -> None:
    report = build(BLK)
    times = {m["seq"]: m["time"] for m in show_json(run_cli, BLK) if m["type"] == "message"}
    replies = [row for row in report.message_rows() if row[6] != model.NONE]
    assert replies
    for row in replies:
        assert report.text(row[4]).endswith(f"reply #{row[6]}")
        assert abs(row[7] - (times[row[1]] - times[row[6]]) * 1e6) <= 2


def test_findings_sit_on_their_messages(run_cli) -> None:
    report = build(POSTCOPY)
    flagged = {m["seq"]: m["findings"] for m in show_json(run_cli, POSTCOPY)
               if m["type"] == "message" and m["findings"]}  # fmt: skip
    rows = {row[1]: row for row in report.message_rows() if row[11]}
    assert set(rows) == set(flagged) != set()
    for seq, findings in flagged.items():
        text = report.text(rows[seq][9])
        assert all(f"{f['severity']}: {f['text']}" in text for f in findings)


def test_a_late_finding_joins_the_message_it_is_about(mixed_trace) -> None:
    """#49 asked for a reply that never came: known only when the session ended."""
    report = build(mixed_trace.path)
    row = next(r for r in report.message_rows() if r[1] == 49)
    assert row[11] == 2 and "no reply" in report.text(row[9])
    alone = by_kind(report, model.FINDING)  # the transport finding has no message
    assert [report.text(r[4]) for r in alone] == ["2 fds never closed"]
    assert [r[5] for r in alone] == [1]  # a warning


def test_the_back_end_channel_has_its_lane(mixed_trace) -> None:
    report = build(mixed_trace.path)
    assert report.lanes == ["front-end", "back-end", "back-end channel"]
    backend = [r[1] for r in report.message_rows()
               if report.text(report.shapes[r[5]][0]) == "backend"]  # fmt: skip
    assert backend == mixed_trace.seqs(channel="backend")


def test_idle_gaps_are_collapsed_into_a_marked_row() -> None:
    report = build(BLK)
    gaps = by_kind(report, model.GAP)
    assert gaps, "the guest boots for seconds between the two ring setups"
    for gap in gaps:
        index = report.rows.index(gap)
        before, after = report.rows[index - 1], report.rows[index + 1]
        assert gap[4] > model.DEFAULT_GAP_S * 1e6
        assert abs(after[3] - before[3] - gap[4]) <= 1
    assert not by_kind(build(BLK, gap_s=60), model.GAP)


def test_stats_milestones_are_on_their_messages(run_cli) -> None:
    _, out, _ = run_cli("stats", "--json", BLK)
    timeline = json.loads(out)["sessions"][0]["timeline"]
    report = build(BLK)
    rows = {row[1]: row for row in report.message_rows()}
    for entry in timeline:
        if entry["seq"] is not None:
            assert entry["what"] in report.text(rows[entry["seq"]][10])
    assert report.sessions[0]["timeline"] == timeline


def test_filters_are_shows(run_cli) -> None:
    requests = RequestFilter.parse(["SET_VRING_*"])
    report = build(BLK, message_filter=MessageFilter(requests=requests))
    shown = [m["seq"] for m in show_json(run_cli, "-r", "SET_VRING_*", BLK)]
    assert [r[1] for r in report.message_rows()] == shown
    assert not by_kind(report, model.EVENT), "show leaves the events out when filtering"
    assert report.filtered


def test_a_session_filter_keeps_that_sessions_summary(mixed_trace) -> None:
    report = build(mixed_trace.path, message_filter=MessageFilter(session=2))
    assert {r[2] for r in report.rows} == {2}
    assert [s["session"] for s in report.sessions] == [2]
    assert {f["session"] for f in report.findings} == {2}


def test_snapshot_rows_carry_the_rings_view() -> None:
    report = build(BLK)
    views = snapshot_texts(str(BLK))
    rows = by_kind(report, model.SNAPSHOT)
    assert [r[6] for r in rows] == sorted(views)
    for row in rows:
        assert report.text(row[5]) == "\n".join(views[row[6]])


def test_streams_get_a_lane_and_rows_of_bytes(tmp_path: Path) -> None:
    """The device-state pipe carries bytes, not messages: a lane, and a row per chunk."""
    from tests.support import synthetic
    from vhtrace.trace.writer import TraceWriter, make_header

    path = tmp_path / "state.vht"
    header = make_header(device="blk")
    mono, wall = header["mono_ns"], header["wall_ns"]
    writer = TraceWriter(str(path), header)
    for seq, message in enumerate(synthetic.blk_session()[:4], 1):
        writer.message(seq, mono + seq, wall + seq, 1, message.channel.value,
                       message.sender.value, message.frame.raw, [])  # fmt: skip
    writer.stream(5, mono + 10, wall + 10, 1, "device-state", "backend", b"x" * 4096)
    writer.stream(6, mono + 11, wall + 11, 1, "device-state", "backend", b"y" * 100)
    writer.close({})
    report = build(path)
    assert report.lanes == ["front-end", "back-end", "device-state"]
    streams = by_kind(report, model.STREAM)
    assert [(report.text(r[4]), report.text(r[5]), r[6]) for r in streams] == [
        ("device-state", "backend", 4096),
        ("device-state", "backend", 100),
    ]
    svg = tmp_path / "state.svg"
    from vhtrace.report.svg import render_svg

    svg.write_text(render_svg(report))
    assert "device-state: 4096 bytes" in svg.read_text()
