"""A small trace with something for every option of show and stats."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.dissect.conftest import synthetic_dir  # noqa: F401 (export's tests read it)
from tests.record.harness import stop_leftover_recorders
from tests.support import synthetic
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, ProtocolFeature, Side
from vhtrace.trace.writer import TraceWriter, make_header

PF = ProtocolFeature
SESSION2_PROTOCOL = (
    1 << PF.REPLY_ACK | 1 << PF.BACKEND_REQ | 1 << PF.BACKEND_SEND_FD | 1 << PF.INBAND_NOTIFICATIONS
)
SESSION2_VIRTIO = 1 << 30 | 1 << 32


@dataclass
class Sent:
    seq: int
    session: int
    channel: Channel
    sender: Side
    frame: Frame
    fd_kinds: tuple[str, ...] = ()


@dataclass
class MixedTrace:
    path: Path
    messages: list[Sent] = field(default_factory=list)

    def seqs(self, **match: object) -> list[int]:
        return [m.seq for m in self.messages if all(getattr(m, k) == v for k, v in match.items())]


def _session2() -> list[tuple[Channel, Side, Frame]]:
    fe, be, main, back = Side.FRONTEND, Side.BACKEND, Channel.MAIN, Channel.BACKEND
    return [
        (main, fe, build("GET_FEATURES")),
        (main, be, build("GET_FEATURES", {"features": SESSION2_VIRTIO}, reply=True)),
        (main, fe, build("GET_PROTOCOL_FEATURES")),
        (main, be, build("GET_PROTOCOL_FEATURES", {"features": SESSION2_PROTOCOL}, reply=True)),
        (main, fe, build("SET_PROTOCOL_FEATURES", {"features": SESSION2_PROTOCOL})),
        (main, fe, build("SET_FEATURES", {"features": SESSION2_VIRTIO})),
        (main, fe, build("GET_QUEUE_NUM")),  # error: MQ not negotiated
        (main, be, build("GET_QUEUE_NUM", {"value": 1}, reply=True)),
        (main, fe, build("SET_VRING_NUM", {"index": 0, "num": 256})),
        (main, fe, build("SET_VRING_NUM", {"index": 0, "num": 256})),  # warning: repeated
        (back, be, build("VRING_CALL", {"index": 0}, channel=back, need_reply=True)),
        (back, fe, build("VRING_CALL", {"value": 0}, channel=back, reply=True)),
        # never answered: a late error when the session ends
        (main, fe, build("SET_VRING_ENABLE", {"index": 0, "num": 1}, need_reply=True)),
    ]


@pytest.fixture
def mixed_trace(tmp_path: Path) -> MixedTrace:
    """Session 1: a clean vhost-user-blk session (36 messages, no finding). Session 2:
    13 messages with an error (#43 GET_QUEUE_NUM without MQ), a warning (#46 repeated
    SET_VRING_NUM), a back-end channel exchange (#47, #48), a request never answered
    (#49, reported when the session ends) and a transport finding (a warning)."""
    trace = MixedTrace(tmp_path / "mixed.vht")
    header = make_header(device="blk", endpoints={"frontend": "/run/fe.sock"})
    mono, wall = header["mono_ns"], header["wall_ns"]
    writer = TraceWriter(str(trace.path), header)
    plan = [(1, m.channel, m.sender, m.frame, m.fd_kinds) for m in synthetic.blk_session()]
    plan += [(2, channel, sender, frame, ()) for channel, sender, frame in _session2()]
    session = 0
    for seq, (number, channel, sender, frame, kinds) in enumerate(plan, 1):
        when = seq * 1000
        if number != session:
            if session:
                writer.event(mono + when, wall + when, session, "session-end", {"reason": "eof"})
            session = number
            writer.event(mono + when, wall + when, session, "session-start", {"pid": 4242})
        writer.message(
            seq,
            mono + when,
            wall + when,
            number,
            channel.value,
            sender.value,
            frame.raw,
            [synthetic.fd_meta(kind) for kind in kinds],
        )
        trace.messages.append(Sent(seq, number, channel, sender, frame, kinds))
    end = (len(plan) + 1) * 1000
    writer.finding(2, Finding(None, "", "fd-leak", "2 fds never closed", Severity.WARNING))
    writer.event(mono + end, wall + end, 2, "session-end", {"reason": "eof"})
    writer.close({"messages": len(plan)})
    return trace


@pytest.fixture
def run_cli(capsys):
    """vhtrace's main() with these arguments: (exit code, stdout, stderr)."""
    from vhtrace.cli.main import main

    def run(*argv: object) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse and fail() exit this way
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _no_leftover_recorder() -> Iterator[None]:
    """No ``vhtrace record`` process a failed test started outlives it."""
    yield
    stop_leftover_recorders()
