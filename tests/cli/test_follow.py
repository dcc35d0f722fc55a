"""``vhtrace show --follow``: a trace still being written, printed as it grows."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.synthetic import write_synthetic_trace

SHOW = [sys.executable, "-m", "vhtrace.cli.main", "show"]


def _lines_of(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The process's stdout, line by line, read by a thread (None at the end)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_a_growing_trace_is_printed_as_it_grows_and_ends_with_its_end_record(
    tmp_path: Path,
) -> None:
    whole = write_synthetic_trace(tmp_path / "whole.vht", 400, flush_every=10)
    data = whole.read_bytes()
    live = tmp_path / "live.vht"
    live.write_bytes(data[: len(data) // 2])  # the writer is somewhere inside a frame
    follower = subprocess.Popen(
        [*SHOW, "--follow", str(live)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = _lines_of(follower)
    first = lines.get(timeout=30)  # printed while the trace is still incomplete
    assert first is not None and "session-start" in first
    assert follower.poll() is None, "--follow stopped at the end of a trace still written"
    with live.open("ab") as growing:
        for cut in (len(data) * 3 // 4, len(data)):
            growing.write(data[growing.tell() : cut])
            growing.flush()
            time.sleep(0.2)
    assert follower.wait(timeout=30) == 0  # the end record came: done, like a whole trace
    printed = [first]
    while (line := lines.get(timeout=10)) is not None:
        printed.append(line)
    assert follower.stderr is not None and follower.stderr.read() == ""
    expected = subprocess.run([*SHOW, str(whole)], capture_output=True, text=True, check=True)
    assert "".join(printed) == expected.stdout


def test_follow_needs_a_file(run_cli) -> None:
    code, out, err = run_cli("show", "--follow", "-")
    assert (code, out) == (2, "")
    assert "--follow reads a trace file" in err


def test_follow_waits_for_a_trace_not_created_yet(tmp_path: Path) -> None:
    whole = write_synthetic_trace(tmp_path / "whole.vht", 50)
    later = tmp_path / "later.vht"
    follower = subprocess.Popen(
        [*SHOW, "--follow", str(later)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert follower.stderr is not None
    said = follower.stderr.readline()  # printed before it waits
    assert "later.vht: not there yet, waiting for it" in said
    assert follower.poll() is None, "--follow gave up on a trace not created yet"
    staged = tmp_path / "staged.vht"
    staged.write_bytes(whole.read_bytes())
    staged.rename(later)
    out, _ = follower.communicate(timeout=30)
    assert follower.returncode == 0
    expected = subprocess.run([*SHOW, str(whole)], capture_output=True, text=True, check=True)
    assert out == expected.stdout


def test_a_count_of_0_is_a_usage_error(run_cli, tmp_path: Path) -> None:
    trace = write_synthetic_trace(tmp_path / "t.vht", 5)
    code, out, err = run_cli("show", "-c", "0", trace)
    assert (code, out) == (2, "")
    assert "-c/--count: invalid _count value" not in err and "a count of at least 1" in err
    code, out, _ = run_cli("show", "-c", "1", trace)
    assert code == 0 and len([line for line in out.splitlines() if " main " in line]) == 1
