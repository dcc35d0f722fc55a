"""The ``vhtrace`` command line: verbs loaded lazily, usage errors exit 2, ^C is 130."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from vhtrace import __version__
from vhtrace.cli import common, main
from vhtrace.cli.verbs import VERBS


def test_only_the_verb_that_runs_is_imported() -> None:
    probe = (
        "import sys; from vhtrace.cli.main import build_parser; build_parser('stats'); "
        "print(sorted(m for m in sys.modules if m.startswith('vhtrace.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = ast.literal_eval(out.stdout)
    assert "vhtrace.cli.stats" in loaded
    assert "vhtrace.cli.replay" not in loaded and "vhtrace.cli.fuzz" not in loaded


def test_help_names_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert all(verb in out for verb in VERBS)
    assert "Exit codes: 0 ok, 1 divergence or failure found, 2 bad input or usage." in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main.main(["--version"])
    assert capsys.readouterr().out.strip() == f"vhtrace {__version__}"


def test_no_verb_and_an_unknown_verb_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["frobnicate"]):
        with pytest.raises(SystemExit) as exited:
            main.main(argv)
        assert exited.value.code == common.EXIT_BAD_INPUT


def run_raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> int:
    """``vhtrace stats X`` whose run raises ``exc``."""

    def raising(args: object) -> int:
        raise exc

    monkeypatch.setattr("vhtrace.cli.stats.run", raising)
    return main.main(["stats", "trace.vht"])


def test_a_usage_error_is_one_line_naming_the_verb(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_raising(monkeypatch, common.UsageError("--at 9: no such snapshot"))
    assert exited.value.code == common.EXIT_BAD_INPUT
    assert capsys.readouterr().err == "vhtrace stats: --at 9: no such snapshot\n"


def test_an_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_raising(monkeypatch, KeyboardInterrupt()) == 130
