"""What every verb shares: exit codes, opening traces, one line on stderr per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from vhtrace.cli import common


def test_the_exit_codes_are_the_documented_ones() -> None:
    assert (common.EXIT_OK, common.EXIT_FOUND, common.EXIT_BAD_INPUT) == (0, 1, 2)


def test_fail_warns_and_exits_with_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        common.fail("t.vht: not a trace")
    assert exited.value.code == 2
    assert capsys.readouterr().err == "vhtrace: t.vht: not a trace\n"
    with pytest.raises(SystemExit) as exited:
        common.fail("diverged", common.EXIT_FOUND)
    assert exited.value.code == 1


def test_a_file_that_is_not_a_trace_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.vht"
    junk.write_bytes(b"not a trace at all")
    with pytest.raises(SystemExit) as exited:
        common.open_trace(str(junk))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("vhtrace: ") and "junk.vht" in err and err.count("\n") == 1


def test_damage_is_reported_with_what_was_read(
    synthetic_trace, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = synthetic_trace(50)
    reader = common.open_trace(str(whole))
    list(reader)
    assert common.report_damage(reader) == common.EXIT_OK
    assert capsys.readouterr().err == ""
    cut = whole.with_name("cut.vht")
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    reader = common.open_trace(str(cut))
    list(reader)
    assert common.report_damage(reader) == common.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "cut.vht" in err and f"({reader.records} records read)" in err
