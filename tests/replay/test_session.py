"""Replay over real unix sockets: the front-end player against the back-end player, and
against peers that misbehave (silent, closing early, answering differently)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from tests.replay.builders import Msg, analysed, be, conversation, fe, meta, with_reply, write_trace
from tests.replay.serving import FAST, TRACES, serve
from vhtrace.protocol.spec import ProtocolFeature, Side
from vhtrace.replay import replay_frontend
from vhtrace.replay.report import Kind, Status
from vhtrace.wire import listen_unix


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
