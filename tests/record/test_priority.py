"""The recorder's priority: out of the relay's way, yet never starved while every CPU is
busy (``--recorder-priority auto``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.record.harness import Recording
from tests.record.test_relay import messages
from tests.support.load import busy_loops
from vhtrace.protocol.messages import build
from vhtrace.record.priority import StarvationWatch, may_raise
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EndRecord

MS = 1_000_000
"""Nanoseconds."""


# -- when to raise: the watch alone ---------------------------------------------------------


def test_a_recorder_behind_and_waiting_for_a_cpu_is_raised_until_it_caught_up() -> None:
    watch = StarvationWatch(behind_for=0.05, starved_share=0.5)
    assert watch.observe(0.00, True, 0) is None  # behind: the window starts
    assert watch.observe(0.03, True, 25 * MS) is None  # not long enough yet
    assert watch.observe(0.06, True, 50 * MS) == "raise"  # waited 50 of 60 ms
    assert watch.raised and watch.times_raised == 1
    assert watch.observe(0.09, True, 50 * MS) is None  # raised, still catching up
    assert watch.observe(0.12, False, 50 * MS) == "lower"
    assert not watch.raised
    assert watch.observe(0.15, False, 50 * MS) is None


def test_a_recorder_that_is_busy_not_starved_is_left_idle() -> None:
    """Behind because it works (a full snapshot), with the CPU it wants: not raised."""
    watch = StarvationWatch(behind_for=0.05, starved_share=0.5)
    assert watch.observe(0.0, True, 0) is None
    for step in range(1, 20):
        assert watch.observe(step * 0.06, True, step * 2 * MS) is None
    assert watch.times_raised == 0


def test_without_a_run_queue_figure_being_behind_is_enough() -> None:
    watch = StarvationWatch(behind_for=0.05)
    assert watch.observe(0.0, True, None) is None
    assert watch.observe(0.05, True, None) == "raise"


def test_being_behind_again_after_catching_up_starts_a_new_window() -> None:
    watch = StarvationWatch(behind_for=0.05)
    watch.observe(0.0, True, 0)
    assert watch.observe(0.04, False, 40 * MS) is None
    assert watch.observe(0.05, True, 45 * MS) is None  # a new window, not 50 ms behind
    assert watch.observe(0.11, True, 100 * MS) == "raise"


# -- who may raise it -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cap_eff", "nice_limit", "expected"),
    [
        ("000001fffeffffff", 0, True),  # root: CAP_SYS_NICE (bit 23)
        (f"{1 << 23:016x}", 0, True),
        ("0000000000000000", 0, False),  # a user: RLIMIT_NICE 0 lets no nice value back
        ("0000000000000000", 20, True),  # RLIMIT_NICE 20: any nice value
        ("000001fffe7fffff", 0, False),  # everything but CAP_SYS_NICE (a container)
    ],
)
def test_who_may_raise_a_sched_idle_recorder(cap_eff: str, nice_limit: int, expected: bool) -> None:
    status = f"Name:\tvhtrace\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff}\n"
    assert may_raise(status, nice_limit) is expected


def test_the_rlimit_rule_is_the_kernels_for_the_recorders_nice_value() -> None:
    """The recorder runs 5 below the relay: leaving SCHED_IDLE for nice n needs
    RLIMIT_NICE >= 20 - n."""
    n = min(19, os.nice(0) + 5)
    no_cap = "CapEff:\t0000000000000000\n"
    assert may_raise(no_cap, 20 - n) and not may_raise(no_cap, 19 - n)


def recorder_of(relay_pid: int, timeout: float = 10) -> int:
    """The recorder's process: the relay's forked child (its command line is the relay's;
    other children, such as a helper run at import, come and go)."""
    deadline = time.monotonic() + timeout
    relay = Path(f"/proc/{relay_pid}/cmdline")
    while time.monotonic() < deadline:
        children = Path(f"/proc/{relay_pid}/task/{relay_pid}/children").read_text().split()
        for child in children:
            try:
                if Path(f"/proc/{child}/cmdline").read_bytes() == relay.read_bytes():
                    return int(child)
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError(f"vhtrace record (pid {relay_pid}) started no recorder")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


needs_sys_nice = pytest.mark.skipif(
    not may_raise(), reason="needs CAP_SYS_NICE or RLIMIT_NICE (to raise the recorder)"
)
needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop CAP_SYS_NICE"
)


@needs_sys_nice
def test_with_the_right_to_raise_it_auto_starts_the_recorder_sched_idle(tmp_path: Path) -> None:
    rec = Recording(tmp_path)
    try:
        recorder = recorder_of(rec.proc.pid)
        wait_for(  # it lowers itself right after the fork
            lambda: os.sched_getscheduler(recorder) == os.SCHED_IDLE,
            "the recorder never went SCHED_IDLE",
        )
    finally:
        assert rec.finish()[0] == 0


@needs_setpriv
def test_without_the_right_to_raise_it_auto_runs_the_recorder_at_normal_priority(
    tmp_path: Path,
) -> None:
    """A SCHED_IDLE recorder that could not be raised again would lose the trace while
    every CPU is busy: without CAP_SYS_NICE (a user, a container) auto runs it niced."""
    front, back = tmp_path / "f.sock", tmp_path / "b.sock"
    argv = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", sys.executable,
            "-m", "vhtrace.cli.main", "record", "--listen", str(front), "--connect", str(back),
            "-w", str(tmp_path / "t.vht")]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        recorder = recorder_of(proc.pid)
        relay_nice = os.getpriority(os.PRIO_PROCESS, proc.pid)
        wait_for(  # it lowers itself right after the fork
            lambda: os.getpriority(os.PRIO_PROCESS, recorder) != relay_nice,
            "the recorder never lowered its priority",
        )
        time.sleep(0.1)  # (had it gone SCHED_IDLE, it would be by now)
        assert os.sched_getscheduler(recorder) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, recorder) == min(19, relay_nice + 5)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()


# -- a starved recorder, for real ---------------------------------------------------------------


@pytest.fixture
def every_cpu_busy() -> Iterator[int]:
    """A busy loop per CPU (processes of this test only), for as long as the test runs."""
    with busy_loops() as count:
        yield count


def on_a_busy_cpu(rec: Recording) -> None:
    """Pin the relay and its recorder to the first CPU, where a busy loop runs: there a
    SCHED_IDLE process gets no CPU at all, whatever the scheduler makes of the rest."""
    cpu = min(os.sched_getaffinity(0))
    for pid in (rec.proc.pid, recorder_of(rec.proc.pid)):
        os.sched_setaffinity(pid, {cpu})


def recorded_messages(trace: Path) -> int:
    """Messages in a trace still being written (what it has so far)."""
    with TraceReader(trace) as reader:
        return len(messages(reader))


@needs_sys_nice
def test_while_every_cpu_is_busy_the_trace_keeps_up_with_the_relay(
    tmp_path: Path, every_cpu_busy: int
) -> None:
    """A SCHED_IDLE recorder gets almost no CPU next to a busy loop per CPU: it wrote
    nothing for as long as they ran (a trace stopped then was empty). Raised while it is
    behind and waiting for a CPU, it writes the messages as they come, so a kill loses
    no more than it would on an idle machine."""
    rec = Recording(tmp_path)
    on_a_busy_cpu(rec)
    fe, be = rec.session()
    count = 3000
    for index in range(count):
        fe.send(build("SET_VRING_NUM", {"index": 0, "num": index % 1024 + 1}))
        be.read()
    deadline = time.monotonic() + 10
    while (got := recorded_messages(rec.trace)) < count:
        assert time.monotonic() < deadline, (
            f"{got} of {count} relayed messages in the trace after 10 s while every CPU "
            "was busy: the recorder is starved"
        )
        time.sleep(0.1)
    os.kill(rec.proc.pid, signal.SIGKILL)  # no clean stop: what is written is the trace
    rec.proc.wait(10)
    assert recorded_messages(rec.trace) == count
    rec.server.close()


@needs_sys_nice
def test_a_raised_recorder_says_so_and_goes_back_to_idle_once_it_caught_up(
    tmp_path: Path, every_cpu_busy: int
) -> None:
    rec = Recording(tmp_path)
    recorder = recorder_of(rec.proc.pid)
    on_a_busy_cpu(rec)
    fe, be = rec.session()
    for index in range(2000):
        fe.send(build("SET_VRING_NUM", {"index": 0, "num": index % 1024 + 1}))
        be.read()
    deadline = time.monotonic() + 10
    while recorded_messages(rec.trace) < 2000:
        assert time.monotonic() < deadline, "the recorder did not catch up"
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while os.sched_getscheduler(recorder) != os.SCHED_IDLE:  # all read: lowered again
        assert time.monotonic() < deadline, "the recorder stayed raised after it caught up"
        time.sleep(0.02)
    code, _, err = rec.finish()
    assert code == 0, err
    assert "every CPU is busy: the recorder runs at normal priority" in err
    with TraceReader(rec.trace) as reader:
        end = [r for r in reader if isinstance(r, EndRecord)]
    assert end and end[0].summary.get("recorder_raised", 0) >= 1, end
