"""Traces written by older vhtrace versions keep reading: real traces kept as fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trace.written import HEADER_RAW, zstd_frame
from vhtrace import __version__
from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.cli.main import main
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceError, TraceReader
from vhtrace.trace.writer import TraceWriter, make_header

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1_TRACES = sorted((FIXTURES / "traces-v1").glob("*.vht"))


def test_there_are_version_1_fixtures() -> None:
    assert len(V1_TRACES) >= 4
    assert fmt.FORMAT_VERSION > 1, "the fixtures are the previous version"


@pytest.mark.parametrize("path", V1_TRACES, ids=[p.stem for p in V1_TRACES])
def test_version_1_trace_reads_whole(path: Path) -> None:
    with TraceReader(path) as reader:
        assert reader.header["version"] == 1
        items = list(analyser_for(reader.header).run(reader))
        assert reader.problem is None
    messages = [i for i in items if isinstance(i, AnalysedMessage)]
    assert len(messages) > 20
    assert messages[0].analysis.name == "GET_FEATURES"
    assert any(m.analysis.role == "reply" for m in messages)


@pytest.mark.parametrize("path", V1_TRACES, ids=[p.stem for p in V1_TRACES])
def test_show_and_stats_work_on_version_1(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "GET_FEATURES" in shown and "session-start" in shown
    assert main(["stats", str(path)]) == 0
    assert "Requests:" in capsys.readouterr().out


# ----------------------------------------------------------------------------
# Format versions
# ----------------------------------------------------------------------------


def write(path: Path, build) -> None:
    writer = TraceWriter(str(path), make_header())
    build(writer)
    writer.close()


def test_a_version_1_reader_refuses_version_2_and_says_what_it_needs(
    tmp_path: Path, monkeypatch
) -> None:
    write(tmp_path / "t.vht", lambda writer: None)
    monkeypatch.setattr(fmt, "READABLE_VERSIONS", frozenset({1}))
    with pytest.raises(TraceError, match=r"version 2: this trace needs vhtrace >= 0\.2\.0"):
        TraceReader(tmp_path / "t.vht")


def test_version_1_traces_still_read() -> None:
    trace = (
        Path(__file__).resolve().parents[2]
        / "tests"
        / "fixtures"
        / "traces-v1"
        / "qemu-qsd-blk.vht"
    )
    with TraceReader(trace) as reader:
        assert reader.header["version"] == 1
        assert len(list(reader)) > 40 and reader.problem is None


# ----------------------------------------------------------------------------
# Versions the reader knows
# ----------------------------------------------------------------------------


def test_a_newer_format_version_says_which_vhtrace_reads_it(tmp_path) -> None:
    newer = max(fmt.READABLE_VERSIONS) + 1
    path = tmp_path / "newer.vht"
    header = {**make_header(), "version": newer, "needs": "9.4.0"}
    path.write_bytes(
        zstd_frame(header) + zstd_frame(("m", 1, 0, 0, 1, "main", "frontend", b"", (), 0))
    )
    with pytest.raises(TraceError) as caught:
        TraceReader(path)
    text = str(caught.value)
    assert f"trace format version {newer}" in text
    assert "this trace needs vhtrace >= 9.4.0" in text
    assert f"this is vhtrace {__version__}" in text


@pytest.mark.parametrize("version", sorted(fmt.READABLE_VERSIONS))
def test_every_readable_version_is_read(tmp_path, version) -> None:
    path = tmp_path / f"v{version}.vht"
    record = ("m", 1, 0, 0, 1, "main", "frontend", HEADER_RAW, (), 0)
    path.write_bytes(zstd_frame({**make_header(), "version": version}) + zstd_frame(record))
    reader = TraceReader(path)
    assert [r.seq for r in reader] == [1]
    assert reader.header["version"] == version
