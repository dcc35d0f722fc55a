"""Loading a trace for replay: the plans of the side played, and every input it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.replay.builders import conversation, write_trace
from tests.support.synthetic import write_synthetic_trace
from vhtrace.protocol.spec import Side
from vhtrace.replay.options import ReplayInputError, ReplayOptions, load


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return write_trace(tmp_path / "two.vht", [conversation(), conversation()])


def test_every_session_is_planned_with_the_default_rules(trace: Path) -> None:
    loaded = load(trace, Side.FRONTEND, ReplayOptions())
    assert len(loaded.plans) == 2 and loaded.notes == []
    assert loaded.header["device"] == "blk"
    assert loaded.rules.ignores  # the default ignores


def test_sessions_and_until_narrow_what_is_planned(trace: Path) -> None:
    assert len(load(trace, Side.BACKEND, ReplayOptions(sessions=(2,))).plans) == 1
    with pytest.raises(ReplayInputError, match=r"no messages in session 3 to replay"):
        load(trace, Side.FRONTEND, ReplayOptions(sessions=(3,)))
    with pytest.raises(ReplayInputError, match=r"no messages up to #0 to replay"):
        load(trace, Side.FRONTEND, ReplayOptions(until=0))


def test_without_default_ignores_there_are_no_rules(trace: Path) -> None:
    assert load(trace, Side.FRONTEND, ReplayOptions(default_ignores=False)).rules.ignores == ()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ReplayOptions(unknown="shrug"), r"--unknown shrug: one of fail, ack, forward"),
        (ReplayOptions(unknown="forward"), r"--unknown forward needs --forward BACKEND.sock"),
        (ReplayOptions(ignore=("NO_SUCH_REQUEST.x",)), r"NO_SUCH_REQUEST"),
    ],
)
def test_bad_options_are_input_errors(trace: Path, options: ReplayOptions, message: str) -> None:
    with pytest.raises(ReplayInputError, match=message):
        load(trace, Side.FRONTEND, options)


def test_what_is_not_a_trace_is_an_input_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.vht"
    junk.write_bytes(b"junk")
    with pytest.raises(ReplayInputError):
        load(junk, Side.FRONTEND, ReplayOptions())


def test_a_damaged_trace_replays_what_it_holds_with_a_note(tmp_path: Path) -> None:
    cut = write_synthetic_trace(tmp_path / "cut.vht", 50, close=False, flush_every=10)
    loaded = load(cut, Side.FRONTEND, ReplayOptions())
    assert loaded.plans and loaded.notes[0].startswith("the trace is damaged (")
