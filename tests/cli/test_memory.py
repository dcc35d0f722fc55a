"""vhtrace memory and vhtrace rings: what they refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from vhtrace.cli.main import main


def test_rings_and_memory_refuse_stdin_and_traces_without_snapshots(capsys) -> None:
    repo = Path(__file__).resolve().parents[2]
    old = str(repo / "tests" / "fixtures" / "traces-v1" / "qemu-qsd-blk.vht")
    with pytest.raises(SystemExit) as exited:
        main(["rings", "-"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["rings", old])
    assert exited.value.code == 2
    assert "no snapshots" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["memory", old, "--at", "1", "--gpa", "banana"])
    assert exited.value.code == 2
