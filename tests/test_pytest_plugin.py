"""The pytest plugin, run the way users run it: pytest on a test module of theirs.

The back-end under test is a stand-in here (the recorded back-end side, served by
vhtrace); recording with real QEMU is in tests/system/test_replay.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from tests.replay.builders import conversation, with_reply, write_trace

USER_TESTS = '''
import os, tempfile, threading
from pathlib import Path

import pytest

from vhtrace.replay import ReplayOptions, replay_frontend, serve_backend


@pytest.fixture
def backend():
    """The back-end under test (here: a trace's back-end side, served)."""
    where = Path(tempfile.mkdtemp(dir="/tmp")) / "be.sock"
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve_backend, daemon=True, kwargs=dict(
        trace=os.environ["BACKEND_TRACE"], path=where, options=ReplayOptions(timeout=None),
        stop=stop, on_ready=lambda _: ready.set()))
    thread.start()
    ready.wait(5)
    yield where
    stop.set()
    thread.join(5)


@pytest.mark.vhtrace("rec.vht", device="blk")
def test_named(vhtrace_replay, backend):
    run = vhtrace_replay(backend)
    assert not run.recorded and run.result.exit_code == 0


@pytest.mark.vhtrace
def test_default_name(vhtrace_replay, backend):
    vhtrace_replay(backend)


@pytest.mark.vhtrace("rec.vht", ignore=["GET_QUEUE_NUM.value"])
def test_ignoring(vhtrace_replay, backend):
    vhtrace_replay(backend)


@pytest.mark.vhtrace("rec.vht")
def test_serving(vhtrace_serve):
    sock = Path(tempfile.mkdtemp(dir="/tmp")) / "mock.sock"
    with vhtrace_serve(sock):
        trace = Path(__file__).parent / "traces" / "test_user" / "rec.vht"
        assert replay_frontend(trace, sock).exit_code == 0
'''


def run_pytest(folder: Path, backend_trace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BACKEND_TRACE": str(backend_trace)}
    plugin = (
        []
        if any(e.name == "vhtrace" for e in entry_points(group="pytest11"))
        else ["-p", "vhtrace.pytest_plugin"]
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfE",
            *plugin,
            str(folder / "test_user.py"),
            *args,
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    folder = tmp_path / "project"
    (folder / "traces" / "test_user").mkdir(parents=True)
    (folder / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    same = write_trace(tmp_path / "same.vht", [conversation()])
    other = write_trace(
        tmp_path / "other.vht", [with_reply(conversation(), "GET_QUEUE_NUM", {"value": 2})]
    )
    return folder, same, other


def test_replays_traces_in_a_folder_per_module(tmp_path: Path) -> None:
    folder, same, _ = setup(tmp_path)
    shutil.copy(same, folder / "traces" / "test_user" / "rec.vht")
    done = run_pytest(folder, same)
    # test_default_name has no trace: in record mode none that fails, naming the path
    assert "1 failed, 3 passed" in done.stdout, done.stdout + done.stderr
    assert "traces/test_user/test_default_name.vht (record mode none)" in done.stdout
    assert "--vhtrace-record-mode=once (needs QEMU)" in done.stdout


def test_a_divergent_back_end_fails_the_test_with_the_report(tmp_path: Path) -> None:
    folder, same, other = setup(tmp_path)
    shutil.copy(same, folder / "traces" / "test_user" / "rec.vht")
    done = run_pytest(folder, other, "-k", "named or ignoring")
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "diverged at #7 GET_QUEUE_NUM reply: value differs" in done.stdout
    assert "value: recorded 1, live 2" in done.stdout


def test_the_short_summary_line_is_the_divergence(tmp_path: Path) -> None:
    folder, same, other = setup(tmp_path)
    shutil.copy(same, folder / "traces" / "test_user" / "rec.vht")
    done = run_pytest(folder, other, "-k", "named", "--tb=line")
    summary = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    assert summary, done.stdout
    # cut to the terminal's width by pytest: the divergence leads, not the replay's banner
    assert "Failed: #7 GET_QUEUE_NUM reply: value" in summary[0], summary


def test_the_record_mode_option_is_checked(tmp_path: Path) -> None:
    folder, same, _ = setup(tmp_path)
    done = run_pytest(folder, same, "--vhtrace-record-mode=sometimes")
    assert done.returncode == 4 and "invalid choice" in done.stderr
