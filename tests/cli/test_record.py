"""``vhtrace record`` with snapshot options, as a user runs it; rings/memory usage errors."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.memory.harness import Guest, exchange, region
from tests.record.harness import Recording
from vhtrace.cli.main import main
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import SnapshotRecord


def test_sigusr1_takes_a_snapshot_and_print_shows_it(tmp_path: Path) -> None:
    rec = Recording(tmp_path, "--snapshot", "signal", "--memory", "full", "--print")
    guest = Guest(1 << 20)
    guest.write(0x1000, b"hello from the guest")
    fe, be = rec.session()
    exchange(fe, be, "ADD_MEM_REG", region(1 << 20), fds=(guest.fd,))
    exchange(fe, be, "GET_FEATURES", reply={"features": 1})  # the recorder has seen the region
    time.sleep(0.2)
    rec.proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    code, out, err = rec.finish()
    guest.close()
    assert code == 0, err
    assert "snapshot 1 signal: 256 pages, 1 new (4 KiB)" in out
    with TraceReader(rec.trace) as reader:
        header = reader.header
        (snap,) = [r for r in reader if isinstance(r, SnapshotRecord)]
    assert header["version"] == 2
    assert header["options"]["snapshot"] == "signal" and header["options"]["memory"] == "full"
    assert snap.trigger == "signal" and snap.seq == 0


def test_without_the_signal_trigger_sigusr1_is_not_ours(tmp_path: Path) -> None:
    rec = Recording(tmp_path, "--memory", "none")
    code, _, err = rec.finish()
    assert code == 0, err
    with TraceReader(rec.trace) as reader:
        assert reader.header["options"]["memory"] == "none"
        assert not [r for r in reader if isinstance(r, SnapshotRecord)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--snapshot", "sometimes"], "--snapshot sometimes: expected start, stop"),
        (["--snapshot", "before:NOT_A_REQUEST"], "no request named 'NOT_A_REQUEST'"),
        (["--snapshot-hold", "-5"], "--snapshot-hold"),
    ],
)
def test_bad_snapshot_options_are_usage_errors(
    tmp_path: Path, args: list[str], message: str, capsys
) -> None:
    argv = [
        "record",
        "--listen",
        str(tmp_path / "f"),
        "--connect",
        str(tmp_path / "b"),
        "-w",
        str(tmp_path / "t.vht"),
        *args,
    ]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "t.vht")
