"""Traces written by older vhtrace versions keep reading: real traces kept as fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.cli.main import main
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceReader

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
