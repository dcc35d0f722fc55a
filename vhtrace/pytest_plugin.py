"""pytest plugin: QEMU's recorded conversation in a back-end's tests, without QEMU in CI.

Modelled on pytest-recording. A test marked ``@pytest.mark.vhtrace`` gets the
``vhtrace_replay`` fixture; calling it with the socket of the back-end the test started
replays the test's trace against it (vhtrace replay --backend) and fails the test with
the divergence report if the back-end answers differently::

    @pytest.mark.vhtrace(device="blk")
    def test_my_backend(vhtrace_replay, my_backend):
        vhtrace_replay(my_backend.socket)

Traces live next to the tests, one folder per test module:
``<test dir>/traces/<module>/<test name>.vht`` (the marker's first argument names
another file in that folder, or any absolute path; override the folder with the
``vhtrace_trace_dir`` fixture or the ``vhtrace_trace_dir`` ini option).

Record modes, as in vcrpy (``--vhtrace-record-mode`` or the ``vhtrace_record_mode`` ini
option): ``none`` (the default, for CI) only replays and fails when the trace is
missing; ``once`` records a missing trace and replays an existing one; ``all`` records
every time. A back-end cannot be recorded without a front-end, so recording runs the
real one: QEMU (through :mod:`vhtrace.lab`) boots a tiny guest with a vhost-user device
of the marker's ``device`` type connected, through ``vhtrace record``, to the back-end
the test started; the guest runs the marker's ``guest`` shell snippet (default: touch
the device) and powers off; the trace is written where the test will replay it next
time. Recording needs QEMU, a guest kernel and busybox (``scripts/install-deps``);
replaying needs none of them.

``vhtrace_serve`` is the other way round, for front-end tests: a mock back-end serving
the recorded back-end side on a socket, checked when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from vhtrace.replay import ReplayOptions, ReplayResult

RECORD_MODES = ("none", "once", "all")
DEFAULT_GUESTS = {
    "blk": "wait_dev /dev/vda\ndd if=/dev/vda of=/dev/null bs=4096 count=16 status=none\n",
    "fs": "mkdir -p /mnt\nmount -t virtiofs share /mnt\nls /mnt > /dev/null\numount /mnt\n",
    "net": "true\n",
}
"""What the recording guest does with its device unless the marker says ``guest=``."""
_FORBIDDEN = "<>?%*:|\"'/\\"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vhtrace", "vhtrace replay of vhost-user traces")
    group.addoption(
        "--vhtrace-record-mode",
        choices=RECORD_MODES,
        default=None,
        help="none (default): only replay traces; once: record missing traces with QEMU; "
        "all: record every trace again",
    )
    parser.addini("vhtrace_record_mode", "default record mode (none, once, all)", default="none")
    parser.addini(
        "vhtrace_trace_dir", "trace folder, relative to each test file's folder", default="traces"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vhtrace(trace=None, *, device='blk', ignore=(), mask_features=(), until=None, "
        "sessions=None, keep_going=False, timeout=5.0, guest=None): the test replays a "
        "vhost-user trace with the vhtrace_replay / vhtrace_serve fixtures",
    )


@pytest.fixture(scope="session")
def vhtrace_record_mode(pytestconfig: pytest.Config) -> str:
    """none, once or all: the command line's choice, else the ini option's."""
    mode = pytestconfig.getoption("--vhtrace-record-mode") or pytestconfig.getini(
        "vhtrace_record_mode"
    )
    if mode not in RECORD_MODES:
        raise pytest.UsageError(f"vhtrace_record_mode = {mode}: one of {', '.join(RECORD_MODES)}")
    return str(mode)


@pytest.fixture(scope="module")
def vhtrace_trace_dir(request: pytest.FixtureRequest) -> Path:
    """The traces of a test module: ``<test dir>/traces/<module name>/``."""
    module = Path(str(request.node.path))
    folder = str(request.config.getini("vhtrace_trace_dir"))
    return module.parent / folder / module.stem


@pytest.fixture
def vhtrace_trace(request: pytest.FixtureRequest, vhtrace_trace_dir: Path) -> Path:
    """The trace of this test: the marker's first argument, else ``<test name>.vht``."""
    marker = request.node.get_closest_marker("vhtrace")
    name = marker.args[0] if marker is not None and marker.args else None
    if name is None:
        name = request.node.name
        if request.cls is not None:
            name = f"{request.cls.__name__}.{name}"
        for char in _FORBIDDEN:
            name = name.replace(char, "-")
        name += ".vht"
    path = Path(name)
    return path if path.is_absolute() else vhtrace_trace_dir / path


@dataclass
class ReplayRun:
    """What ``vhtrace_replay(...)`` did."""

    trace: Path
    recorded: bool
    """True when this run recorded the trace (with QEMU) instead of replaying it."""
    result: ReplayResult | None
    """The replay's result (None when the run recorded)."""

    def __str__(self) -> str:
        if self.result is None:
            return f"recorded {self.trace}"
        from vhtrace.replay.report import headline

        return f"replayed {self.trace}: {headline(self.result)}"


def _failure_text(result: ReplayResult) -> str:
    """The divergence first (what ``-q`` and the short summary show), then the report."""
    from vhtrace.replay.report import headline, render_text

    return "\n".join([headline(result), *render_text(result)])


def _options(marker: pytest.Mark | None, overrides: dict[str, Any]) -> ReplayOptions:
    from vhtrace.replay import ReplayOptions

    settings = dict(marker.kwargs) if marker is not None else {}
    settings.update(overrides)
    sessions = settings.get("sessions")
    return ReplayOptions(
        ignore=tuple(settings.get("ignore", ())),
        mask_features=tuple(settings.get("mask_features", ())),
        default_ignores=settings.get("default_ignores", True),
        until=settings.get("until"),
        sessions=tuple(sessions) if sessions is not None else None,
        keep_going=settings.get("keep_going", False),
        timeout=settings.get("timeout", 5.0),
        connect_timeout=settings.get("connect_timeout", 10.0),
        loose=settings.get("loose", False),
        unknown=settings.get("unknown", "fail"),
        forward=settings.get("forward"),
    )


class Replayer:
    """The ``vhtrace_replay`` fixture: call it with the back-end's socket."""

    def __init__(self, request: pytest.FixtureRequest, mode: str, trace: Path) -> None:
        self.request = request
        self.mode = mode
        self.trace = trace
        self.marker = request.node.get_closest_marker("vhtrace")

    def __call__(self, backend: str | os.PathLike[str], **overrides: Any) -> ReplayRun:
        """Replay the test's trace against ``backend`` (or record it, by the mode).

        Keyword arguments override the marker's (``ignore``, ``until``, ...). The test
        fails with the divergence report if the back-end diverges."""
        exists = self.trace.exists()
        if self.mode == "all" or (self.mode == "once" and not exists):
            self.record(backend, **overrides)
            return ReplayRun(self.trace, True, None)
        if not exists:
            pytest.fail(
                f"vhtrace: no trace {self.trace} (record mode {self.mode}); record it with "
                "--vhtrace-record-mode=once (needs QEMU)",
                pytrace=False,
            )
        from vhtrace.replay import replay_frontend

        result = replay_frontend(self.trace, backend, _options(self.marker, overrides))
        if result.exit_code != 0:
            pytest.fail(_failure_text(result), pytrace=False)
        return ReplayRun(self.trace, False, result)

    def record(self, backend: str | os.PathLike[str], **overrides: Any) -> Path:
        """Record the trace: real QEMU, through ``vhtrace record``, against ``backend``."""
        from vhtrace.lab import VhostUserDevice, Workspace, missing

        settings = {**(self.marker.kwargs if self.marker is not None else {}), **overrides}
        device = str(settings.get("device", "blk"))
        reasons = missing("qemu", "busybox", "kernel")
        if reasons:
            pytest.fail(
                f"vhtrace: cannot record {self.trace}: " + "; ".join(reasons), pytrace=False
            )
        guest = settings.get("guest") or DEFAULT_GUESTS.get(device, "true\n")
        tmp_path = self.request.getfixturevalue("tmp_path")
        cache = Path(os.environ.get("VHTRACE_LAB_CACHE") or tmp_path / "lab-cache")
        self.trace.parent.mkdir(parents=True, exist_ok=True)
        partial = self.trace.with_name(self.trace.name + ".part")
        with Workspace(tmp_path / "vhtrace-record", cache) as lab:
            initrd = lab.initramfs(guest, devices=(device,))
            front = lab.sock("front")
            proxy = lab.record(
                front, Path(backend), trace=partial, extra_args=("--once", "--device", device)
            )
            with lab.qemu(initrd, [VhostUserDevice(device, front)]) as vm:  # type: ignore[arg-type]
                vm.finish(timeout=float(settings.get("record_timeout", 180)))
            proxy.wait(30)
        os.replace(partial, self.trace)
        return self.trace


@pytest.fixture
def vhtrace_replay(
    request: pytest.FixtureRequest, vhtrace_record_mode: str, vhtrace_trace: Path
) -> Replayer:
    """Replay (or, by the record mode, record) this test's trace against a back-end."""
    return Replayer(request, vhtrace_record_mode, vhtrace_trace)


class Server:
    """The ``vhtrace_serve`` fixture: a mock back-end made from the test's trace."""

    def __init__(self, request: pytest.FixtureRequest, trace: Path) -> None:
        self.request = request
        self.trace = trace
        self.marker = request.node.get_closest_marker("vhtrace")

    @contextlib.contextmanager
    def __call__(self, socket_path: str | os.PathLike[str], **overrides: Any) -> Iterator[Path]:
        """Serve the recorded back-end on ``socket_path`` for the ``with`` block; fail the
        test if the front-end diverged from the recording."""
        from vhtrace.replay import serve_backend

        if not self.trace.exists():
            pytest.fail(
                f"vhtrace: no trace {self.trace} to serve; record one with vhtrace record",
                pytrace=False,
            )
        options = _options(self.marker, {"timeout": None, **overrides})
        stop, ready = threading.Event(), threading.Event()
        box: dict[str, ReplayResult] = {}

        def run() -> None:
            box["result"] = serve_backend(
                self.trace, socket_path, options, stop=stop, on_ready=lambda _: ready.set()
            )
            ready.set()

        thread = threading.Thread(target=run, name="vhtrace-serve", daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield Path(socket_path)
        finally:
            thread.join(float(overrides.get("finish_timeout", 10)))
            stop.set()
            thread.join(10)
        result = box.get("result")
        if result is not None and result.exit_code != 0:
            pytest.fail(_failure_text(result), pytrace=False)


@pytest.fixture
def vhtrace_serve(request: pytest.FixtureRequest, vhtrace_trace: Path) -> Server:
    """Serve this test's trace as a mock back-end: ``with vhtrace_serve(path): ...``."""
    return Server(request, vhtrace_trace)
