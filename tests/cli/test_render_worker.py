"""``vhtrace show -j 2``: a second process renders, and the output is the one process's."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vhtrace.analysis import analyser_for, analysis_token
from vhtrace.cli import render_worker
from vhtrace.cli.render_worker import RenderWorker
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import MessageRecord

REAL_TRACES = Path(__file__).resolve().parents[2] / "traces"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the render worker needs fork")


@pytest.fixture
def run_fd(capfd):
    """main() with these arguments, stdout and stderr captured at the fd level (the
    worker process writes to the same fd 1): (exit code, stdout, stderr)."""
    from vhtrace.cli.main import main

    def run(*argv: object) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        out, err = capfd.readouterr()
        return code, out, err

    return run


def _same_either_way(run_fd, *argv: object) -> tuple[int, str, str]:
    one = run_fd("show", "-j", "1", *argv)
    two = run_fd("show", "-j", "2", *argv)
    assert two == one
    return one


OPTION_SETS = [
    [],
    ["-V"],
    ["-x"],
    ["--json"],
    ["--json", "-x"],
    ["--findings"],
    ["--json", "-r", "SET_VRING_*"],
    ["-r", "SET_VRING_ENABLE"],
    ["--from", "backend", "-V"],
    ["--channel", "backend", "--json"],
    ["--range", "10-45", "-V"],
    ["--session", "2", "--json"],
    ["-c", "5"],
    ["--fail-on", "warning"],
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=" ".join)
def test_two_processes_print_what_one_prints(run_fd, mixed_trace, options) -> None:
    code, out, _ = _same_either_way(run_fd, *options, mixed_trace.path)
    assert out  # every option set shows something of the mixed trace
    assert code in (0, 1)


def test_a_truncated_trace_reads_the_same_in_two_processes(run_fd, synthetic_trace) -> None:
    killed = synthetic_trace(500, name="killed.vht", flush_every=50, close=False)
    cut = killed.with_name("cut.vht")
    cut.write_bytes(killed.read_bytes()[:-40])  # the last frame cut short as well
    for trace in (killed, cut):
        for options in ([], ["--json"]):
            code, out, err = _same_either_way(run_fd, *options, trace)
            assert code == 2 and out and "records read" in err


@pytest.mark.parametrize("trace", sorted(REAL_TRACES.glob("*.vht")), ids=lambda p: p.stem)
def test_real_traces_print_the_same_in_two_processes(run_fd, trace) -> None:
    for options in ([], ["--json", "-x"], ["-V"]):
        code, out, _ = _same_either_way(run_fd, *options, trace)
        assert code == 0 and out


def test_stdin_cannot_be_read_twice(run_fd, mixed_trace) -> None:
    code, out, err = run_fd("show", "-j", "2", "-")
    assert (code, out) == (2, "")
    assert "--jobs 2 needs a trace file" in err


def test_when_a_worker_is_used(mixed_trace, monkeypatch) -> None:
    path = str(mixed_trace.path)
    assert not render_worker.available("-")
    assert render_worker.available(path) == (sys.stdout.fileno() >= 0)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # output the worker cannot share
    assert not render_worker.available(path)
    size = mixed_trace.path.stat().st_size
    two_cpus = len(os.sched_getaffinity(0)) >= 2
    alone = threading.active_count() == 1
    assert render_worker.worth_it(path, min_bytes=size) == (two_cpus and alone)
    assert not render_worker.worth_it(path, min_bytes=size + 1)
    # never from a process with other threads running
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not render_worker.worth_it(path, min_bytes=size)
    finally:
        release.set()
        other.join()


def test_a_closed_stdout_ends_both_processes_quietly(synthetic_trace) -> None:
    trace = synthetic_trace(20_000)  # output far larger than a pipe's buffer
    shown = subprocess.Popen(
        [sys.executable, "-m", "vhtrace.cli.main", "show", "-j", "2", str(trace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert shown.stdout is not None and shown.stderr is not None
    first = shown.stdout.readline() + shown.stdout.readline()  # session-start, #1
    shown.stdout.close()
    err = shown.stderr.read()
    assert shown.wait(timeout=60) == 0
    assert b"GET_FEATURES" in first
    assert err == b""


def test_ctrl_c_stops_both_processes_quietly(synthetic_trace) -> None:
    trace = synthetic_trace(20_000)
    shown = subprocess.Popen(
        [sys.executable, "-m", "vhtrace.cli.main", "show", "-j", "2", str(trace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's job
    )
    assert shown.stdout is not None and shown.stderr is not None
    assert shown.stdout.readline()  # both run; the worker now blocks on the full pipe
    os.killpg(shown.pid, signal.SIGINT)  # what Ctrl-C sends: the whole group
    shown.stdout.read()
    assert shown.wait(timeout=60) == 130
    assert b"Traceback" not in shown.stderr.read()


def _first_message(path: Path) -> tuple[TraceReader, object]:
    reader = TraceReader(str(path))
    analyser = analyser_for(reader.header)
    record = next(r for r in reader if type(r) is MessageRecord)
    return reader, analyser.message(record)


def test_a_failing_worker_fails_the_command(mixed_trace, capfd) -> None:
    reader, item = _first_message(mixed_trace.path)
    reader.close()

    def broken(item: object) -> str:
        raise ZeroDivisionError("no renderer here")

    worker = RenderWorker(str(mixed_trace.path), broken)
    worker.message(0, item)
    with pytest.raises(RuntimeError, match="rendering process failed"):
        worker.finish()
    assert "ZeroDivisionError: no renderer here" in capfd.readouterr().err


def test_a_worker_out_of_step_names_the_records(mixed_trace) -> None:
    reader, item = _first_message(mixed_trace.path)
    reader.close()
    token = analysis_token(item.analysis)
    fresh = TraceReader(str(mixed_trace.path))
    with pytest.raises(ValueError, match="analysis of #1 given with the record of #2"):
        render_worker._render(fresh, iter([[(1, token)]]), str, io.StringIO())
    fresh.close()
    fresh = TraceReader(str(mixed_trace.path))
    with pytest.raises(RuntimeError, match="the trace ended before message record 999"):
        render_worker._render(fresh, iter([[(999, token)]]), str, io.StringIO())
    fresh.close()
