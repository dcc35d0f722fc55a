"""Replaying a trace's front-end side against a back-end: unusable inputs, unknown
requests, real time, an interrupted replay."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

from tests.replay.builders import conversation, write_trace
from tests.replay.serving import FAST, serve
from vhtrace.replay import replay_frontend
from vhtrace.replay.report import Kind, Status


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
    gap = 1.5
    msgs[4] = replace(msgs[4], gap_ns=int(gap * 1e9))  # before SET_PROTOCOL_FEATURES
    trace = write_trace(tmp_path / "t.vht", [msgs])
    for realtime in (False, True):
        served = serve(trace, where / "be.sock")
        start = time.monotonic()
        result = replay_frontend(trace, where / "be.sock", replace(FAST, realtime=realtime))
        took = time.monotonic() - start
        assert result.exit_code == 0 and served.finish().exit_code == 0
        # what realtime guarantees: the gap is waited (not how fast the rest goes); without
        # it, the whole replay of 20 messages is shorter than the gap alone
        assert (took >= gap) is realtime, (realtime, took)


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
