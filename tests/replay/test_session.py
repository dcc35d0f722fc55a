"""Replay over real unix sockets: the front-end player against the back-end player, and
against peers that misbehave (silent, closing early, answering differently)."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.replay.builders import (
    Msg,
    analysed,
    be,
    conversation,
    fe,
    meta,
    with_reply,
    write_trace,
)
from vhtrace.protocol.spec import ProtocolFeature, Side
from vhtrace.replay import ReplayOptions, ReplayResult, replay_frontend, serve_backend
from vhtrace.replay.report import Kind, Status
from vhtrace.wire import listen_unix

TRACES = Path(__file__).resolve().parents[2] / "traces"
FAST = ReplayOptions(timeout=2.0, connect_timeout=2.0)


@pytest.fixture
def where() -> Iterator[Path]:
    """A short directory for sockets (unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vhr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Served:
    """serve_backend in a thread: the replayed back-end, listening once started."""

    def __init__(self, trace: Path, path: Path, options: ReplayOptions) -> None:
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.result: ReplayResult | None = None

        def run() -> None:
            self.result = serve_backend(
                trace, path, options, stop=self.stop, on_ready=lambda _: self.ready.set()
            )
            self.ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def finish(self, timeout: float = 5.0) -> ReplayResult:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(timeout)
        assert self.result is not None
        return self.result


def serve(trace: Path, path: Path, **options) -> Served:
    return Served(trace, path, replace(FAST, timeout=None, **options))


def test_front_end_player_against_back_end_player(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    served = serve(trace, where / "be.sock")
    result = replay_frontend(trace, where / "be.sock", FAST)
    assert result.exit_code == 0, "\n".join(d.headline for d in result.divergences)
    backend = served.finish()
    assert backend.exit_code == 0
    [session] = backend.sessions
    # the back-end-channel request went out and the front-end's recorded answer came back
    assert {c.seq: c.status for c in session.checks}[22] is Status.OK
    assert session.sent == 9 and session.received == 17


@pytest.mark.parametrize(
    "name", ["qemu-qsd-blk", "qemu-virtiofsd", "qemu-qsd-postcopy-dst", "qemu-qsd-reconnect"]
)
def test_real_traces_replay_against_themselves(name: str, where: Path) -> None:
    """Each real trace, served, is what its own front-end expects: fds included (the
    postcopy userfaultfd), sessions ending as recorded (the back-end closing, reconnects)."""
    trace = TRACES / f"{name}.vht"
    served = serve(trace, where / "be.sock")
    result = replay_frontend(trace, where / "be.sock", FAST)
    assert result.exit_code == 0, "\n".join(d.headline for d in result.divergences)
    assert served.finish().exit_code == 0


def test_a_back_end_that_answers_differently(tmp_path: Path, where: Path) -> None:
    recorded = write_trace(tmp_path / "rec.vht", [conversation()])
    other = write_trace(
        tmp_path / "other.vht", [with_reply(conversation(), "GET_QUEUE_NUM", {"value": 2})]
    )
    served = serve(other, where / "be.sock")
    result = replay_frontend(recorded, where / "be.sock", FAST)
    assert result.exit_code == 1
    [divergence] = result.divergences
    assert (divergence.seq, divergence.kind) == (7, Kind.MISMATCH)
    assert [(d.field, d.recorded, d.live) for d in divergence.differences] == [("value", "1", "2")]
    served.stop.set()
    served.finish()


def test_a_silent_back_end_times_out(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    listener = listen_unix(where / "be.sock")
    result = replay_frontend(trace, where / "be.sock", replace(FAST, timeout=0.3))
    listener.close()
    [divergence] = result.divergences
    assert divergence.kind is Kind.TIMEOUT and divergence.seq == 2
    assert result.exit_code == 1


def test_a_back_end_that_hangs_up(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    listener = listen_unix(where / "be.sock")

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(12)
        conn.close()

    thread = threading.Thread(target=hang_up)
    thread.start()
    result = replay_frontend(trace, where / "be.sock", FAST)
    thread.join()
    listener.close()
    [divergence] = result.divergences
    assert divergence.kind is Kind.CLOSED and divergence.seq == 2


def test_no_back_end_is_unusable(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    result = replay_frontend(trace, where / "nobody.sock", replace(FAST, connect_timeout=0.1))
    assert result.exit_code == 2 and result.error and "nothing listens" in result.error


def test_not_a_trace_is_unusable(tmp_path: Path, where: Path) -> None:
    bogus = tmp_path / "bogus.vht"
    bogus.write_bytes(b"hello")
    result = replay_frontend(bogus, where / "x.sock", FAST)
    assert result.exit_code == 2 and "not a vhtrace trace" in (result.error or "")


def test_unknown_requests_acked(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation(with_channel=False)])
    served = serve(trace, where / "be.sock", until=11, unknown="ack")
    result = replay_frontend(trace, where / "be.sock", FAST)
    assert result.exit_code == 0, "\n".join(d.headline for d in result.divergences)
    backend = served.finish()
    assert backend.exit_code == 0
    handled = [c for c in backend.sessions[0].checks if c.status is Status.HANDLED]
    notes = {c.label: c.note for c in handled}
    assert notes["live SET_VRING_NUM"] == "no reply owed: ignored"
    assert notes["live GET_VRING_BASE"] == "answered with a zeroed vring_base"
    assert notes["live SET_VRING_ENABLE"] == "acknowledged (u64 0)"


def test_unknown_requests_fail_by_default(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation(with_channel=False)])
    served = serve(trace, where / "be.sock", until=11)
    result = replay_frontend(trace, where / "be.sock", FAST)
    backend = served.finish()
    [divergence] = backend.divergences
    assert divergence.kind is Kind.NOT_IN_TRACE and divergence.where == "live SET_VRING_NUM"
    assert result.exit_code == 1  # the mock hung up on it


def test_unknown_requests_forwarded_to_a_real_back_end(tmp_path: Path, where: Path) -> None:
    """The shadow back-end sees the whole conversation and answers what the mock lacks."""
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    real = serve(trace, where / "real.sock")
    mock = serve(
        trace, where / "mock.sock", until=13, unknown="forward", forward=str(where / "real.sock")
    )
    # (up to #20: the real back-end's CONFIG_CHANGE_MSG #21 goes to the mock, not to us)
    result = replay_frontend(trace, where / "mock.sock", replace(FAST, until=20))
    assert result.exit_code == 0, "\n".join(d.headline for d in result.divergences)
    mock_result = mock.finish()
    assert mock_result.exit_code == 0
    handled = [c for c in mock_result.sessions[0].checks if c.status is Status.HANDLED]
    assert any("answered by the real back-end" in c.note for c in handled)
    enable = [c for c in handled if c.label == "live SET_VRING_ENABLE"]
    assert enable and all("real back-end" in c.note for c in enable)
    real.stop.set()
    real_result = real.finish()
    # the real back-end followed the whole conversation (what came after #20 races with
    # the mock hanging up, so only the requests before it are certain)
    checks = {c.seq: c.status for c in real_result.sessions[0].checks}
    assert all(checks[seq] is Status.OK for seq in (1, 3, 12, 17, 19))
    assert all(d.kind is Kind.CLOSED for d in real_result.divergences)


def test_realtime_keeps_the_recorded_gaps(tmp_path: Path, where: Path) -> None:
    msgs = conversation()
    msgs[4] = replace(msgs[4], gap_ns=300_000_000)  # 0.3 s before SET_PROTOCOL_FEATURES
    trace = write_trace(tmp_path / "t.vht", [msgs])
    for realtime, low, high in ((False, 0.0, 0.25), (True, 0.3, 2.0)):
        served = serve(trace, where / "be.sock")
        start = time.monotonic()
        result = replay_frontend(trace, where / "be.sock", replace(FAST, realtime=realtime))
        took = time.monotonic() - start
        assert result.exit_code == 0 and served.finish().exit_code == 0
        assert low <= took < high, (realtime, took)


def test_serving_can_be_stopped_before_anyone_comes(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    served = serve(trace, where / "be.sock")
    served.stop.set()
    result = served.finish()
    assert result.exit_code == 2 and "stopped before a front-end came" in (result.error or "")
    assert not (where / "be.sock").exists()


def test_serving_a_socket_in_use_is_unusable(tmp_path: Path, where: Path) -> None:
    trace = write_trace(tmp_path / "t.vht", [conversation()])
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(str(where / "busy.sock"))
    busy.listen(1)
    result = serve_backend(trace, where / "busy.sock", FAST)
    busy.close()
    assert result.exit_code == 2
    assert (
        result.error
        == f"cannot listen: {where / 'busy.sock'}: something is already listening there"
    )


def test_analysed_builders_match_the_trace_file(tmp_path: Path) -> None:
    """The builders' in-memory analysis and the written trace agree (the tests rely on it)."""
    from vhtrace.analysis import AnalysedMessage, analyser_for
    from vhtrace.trace.reader import TraceReader

    trace = write_trace(tmp_path / "t.vht", [conversation()])
    with TraceReader(trace) as reader:
        from_file = [
            i.analysis.name
            for i in analyser_for(reader.header).run(reader)
            if isinstance(i, AnalysedMessage)
        ]
    in_memory = [
        i.analysis.name for i in analysed(conversation()) if isinstance(i, AnalysedMessage)
    ]
    assert from_file == in_memory


def device_state_session(direction: int) -> list[Msg]:
    """Negotiation with DEVICE_STATE, then the state transfer through a pipe."""
    protocol = 1 << ProtocolFeature.REPLY_ACK | 1 << ProtocolFeature.DEVICE_STATE
    # save (0): the back-end writes, so the front-end passes the pipe's write end
    pipe_end = "wronly" if direction == 0 else "rdonly"
    pipe = meta("pipe", flags=[pipe_end], interposed="device-state")
    return [
        fe("GET_FEATURES"),
        be("GET_FEATURES", {"features": 1 << 30 | 1 << 32}),
        fe("GET_PROTOCOL_FEATURES"),
        be("GET_PROTOCOL_FEATURES", {"features": protocol}),
        fe("SET_PROTOCOL_FEATURES", {"features": protocol}),
        fe("SET_DEVICE_STATE_FD", {"direction": direction, "phase": 0}, fds=(pipe,)),
        be("SET_DEVICE_STATE_FD", {"error": 0, "nofd": True, "reserved": 0}),
        fe("CHECK_DEVICE_STATE"),
        be("CHECK_DEVICE_STATE", {"value": 0}),
    ]


@pytest.mark.parametrize(("direction", "sender"), [(0, "backend"), (1, "frontend")])
def test_device_state_travels_through_the_pipe(
    tmp_path: Path, where: Path, direction: int, sender: str
) -> None:
    """Save: the served back-end writes its recorded state, the front-end player reads and
    compares it; load: the front-end player writes, the served back-end compares."""
    state = bytes(range(256)) * 300  # more than a pipe holds at once
    side = Side(sender)
    msgs = device_state_session(direction)
    trace = write_trace(tmp_path / "t.vht", [msgs], streams={6: ("device-state", side, state)})
    served = serve(trace, where / "be.sock")
    result = replay_frontend(trace, where / "be.sock", FAST)
    backend = served.finish()
    assert result.exit_code == 0 and backend.exit_code == 0, (
        result.divergences + backend.divergences
    )
    other = write_trace(
        tmp_path / "other.vht", [msgs], streams={6: ("device-state", side, state[:-1] + b"!")}
    )
    served = serve(other, where / "be.sock")
    result = replay_frontend(trace, where / "be.sock", FAST)
    backend = served.finish()
    reader = result if direction == 0 else backend
    [divergence] = reader.divergences
    assert divergence.where == "device-state stream"
    assert divergence.headline.endswith(f"first difference at byte {len(state) - 1}")


def test_serve_connect_reaches_a_listening_front_end(tmp_path: Path, where: Path) -> None:
    """--serve-connect: the front-end listens (QEMU server=on) and the replay connects."""
    from vhtrace.replay.fds import FdFactory
    from vhtrace.replay.options import load
    from vhtrace.replay.player import Player
    from vhtrace.replay.session import LoopOptions, SessionRunner

    trace = write_trace(tmp_path / "t.vht", [conversation()])
    listener = listen_unix(where / "fe.sock")
    box: dict[str, ReplayResult] = {}
    thread = threading.Thread(
        target=lambda: box.update(
            result=serve_backend(trace, where / "fe.sock", FAST, connect=True)
        )
    )
    thread.start()
    conn, _ = listener.accept()
    loaded = load(trace, Side.FRONTEND, FAST)
    [plan] = loaded.plans
    factory = FdFactory()
    session = SessionRunner(
        plan, Player(plan, loaded.rules), conn, factory=factory, options=LoopOptions(timeout=2.0)
    ).run()
    factory.close()
    thread.join(5)
    listener.close()
    assert session.divergences == []
    assert box["result"].exit_code == 0 and box["result"].play == "backend"


def test_an_interrupted_replay_is_not_a_success(tmp_path: Path, where: Path) -> None:
    msgs = conversation()
    msgs[4] = replace(msgs[4], gap_ns=2_000_000_000)  # a long recorded pause
    trace = write_trace(tmp_path / "t.vht", [msgs])
    served = serve(trace, where / "be.sock")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    result = replay_frontend(trace, where / "be.sock", replace(FAST, realtime=True), stop=stop)
    served.stop.set()
    served.finish()
    assert result.sessions[0].interrupted and not result.divergences
    assert (result.exit_code, result.verdict) == (2, "interrupted")
