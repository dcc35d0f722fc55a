"""Where a script's code raised, in one line: the script's line, not mockbackend's."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from mockbackend.errors import describe_exception
from mockbackend.faults import UnknownRequest
from mockbackend.script import Script, ScriptError, load_script_file


def raised_by(path: Path) -> BaseException:
    """What running a script file raised (as load_script_file runs it)."""
    try:
        runpy.run_path(str(path))
    except Exception as exc:
        return exc
    raise AssertionError(f"{path} loaded")


def test_a_script_that_raises_names_its_file_and_line(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("x = 1\n\nraise ValueError('no disk')\n")
    exc = raised_by(script)
    assert describe_exception(exc, script) == f"{script}, line 3: ValueError: no disk"


def test_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    script = tmp_path / "syntax.py"
    script.write_text("def f(:\n")
    exc = raised_by(script)
    text = describe_exception(exc, script)
    assert text.startswith(f"{script}, line 1: SyntaxError: ")


def test_without_a_path_the_innermost_frame_outside_mockbackend_is_named() -> None:
    def hook() -> None:
        raise KeyError("queue")

    try:
        hook()
    except KeyError as exc:
        text = describe_exception(exc)
    assert text.startswith(f"{__file__}, line ") and text.endswith("KeyError: 'queue'")


def test_an_exception_without_text_or_traceback() -> None:
    assert describe_exception(RuntimeError()) == "RuntimeError"
    assert describe_exception(RuntimeError(), "s.py") == "s.py: RuntimeError"


def test_an_unknown_request_reads_as_its_own_message() -> None:
    exc = UnknownRequest("GET_FEATURS")
    assert describe_exception(exc) == str(exc)


def test_load_script_file_reports_the_same_line(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("x = 1\n\nraise ValueError('no disk')\n")
    with pytest.raises(ScriptError) as failed:
        load_script_file(script, Script())
    assert str(failed.value) == f"{script}, line 3: ValueError: no disk"
