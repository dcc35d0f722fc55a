"""The recorder in its own process, as ``vhtrace record`` runs it: the relay's process (this
one) hands it typed records and dups of the fds over a socketpair.

What must hold across the process boundary: the trace is the same (bytes, fds on their
message, their metadata), a before:NAME hold is exact, no fd is left behind on either side,
and a recorder that dies never stops the relay.
"""

from __future__ import annotations

import array
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.memory.harness import Guest, exchange, start_device
from tests.memory.test_recording import one_request
from tests.record.harness import ProxyHarness, open_fds
from tests.record.test_relay import messages, negotiate
from vhtrace.memory import triggers
from vhtrace.memory.recording import SnapshotConfig
from vhtrace.protocol.messages import build
from vhtrace.record import handoff, link
from vhtrace.record.handoff import Relayed
from vhtrace.record.priority import PRIORITIES, may_raise
from vhtrace.record.recorder import Recorder
from vhtrace.trace.records import (
    FindingRecord,
    MessageRecord,
    SnapshotRecord,
)
from vhtrace.trace.writer import TraceWriter, make_header


@pytest.fixture
def harness(tmp_path: Path):
    harness = ProxyHarness(tmp_path, host="process")
    yield harness
    harness.stop()


def process_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_the_trace_is_byte_exact_with_fd_metadata(harness: ProxyHarness) -> None:
    fe, be = harness.connect()
    negotiate(fe, be)
    call = os.eventfd(0)
    frame = build("SET_VRING_CALL", {"index": 0}, fds=(call,))
    fe.send(frame)
    got = be.read()
    assert got.raw == frame.raw and len(got.fds) == 1
    os.close(got.fds[0])
    os.close(call)
    ours, theirs = socket.socketpair()
    fe.send(build("SET_BACKEND_REQ_FD", fds=(theirs.fileno(),)))
    for fd in be.read().fds:
        os.close(fd)
    ours.close()
    theirs.close()
    records, problem = harness.records()
    assert problem is None
    sent = messages(records)
    kick = next(m for m in sent if m.raw == frame.raw)
    assert kick.fds[0]["kind"] == "eventfd"
    channel = next(m for m in sent if m.header[0] == 21)
    assert channel.fds[0]["interposed"] == "backend" and channel.fds[0]["kind"] == "socket"
    assert [m.seq for m in sent] == sorted(m.seq for m in sent)


def test_no_fd_is_left_behind_on_either_side_over_1000_sessions(harness: ProxyHarness) -> None:
    def cycle() -> None:
        fe, be = harness.connect()
        call = os.eventfd(0)
        a, b = socket.socketpair()
        fe.send(build("SET_VRING_CALL", {"index": 0}, fds=(call,)))
        fe.send(build("SET_BACKEND_REQ_FD", fds=(b.fileno(),)))
        for frame in (be.read(), be.read()):
            for fd in frame.fds:
                os.close(fd)
        for fd in (call,):
            os.close(fd)
        a.close()
        b.close()
        fe.close()
        be.close()

    cycle()
    harness.wait_sessions_ended(1)
    time.sleep(0.3)  # the recorder has closed its copies
    recorder = harness.recorder.pid
    baseline, recorder_baseline = open_fds(), process_fds(recorder)
    for _ in range(1000):
        cycle()
    harness.wait_sessions_ended(1001, timeout=60)
    deadline = time.monotonic() + 5
    while (open_fds() != baseline or process_fds(recorder) > recorder_baseline) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert open_fds() - baseline == set()
    assert process_fds(recorder) <= recorder_baseline, "the recorder kept fds"


def test_a_before_snapshot_holds_exactly_across_the_processes(tmp_path: Path) -> None:
    guest = Guest()
    config = SnapshotConfig(triggers.parse("before:GET_VRING_BASE"), "rings")
    harness = ProxyHarness(tmp_path, snapshots=config, host="process")
    try:
        fe, be = harness.connect()
        start_device(fe, be, guest)
        one_request(guest)
        fe.send(build("GET_VRING_BASE", {"index": 0, "num": 0}))
        be.read()  # it came only once the snapshot was taken
        be.send(build("GET_VRING_BASE", {"index": 0, "num": 1}, reply=True))
        fe.read()
        exchange(fe, be, "GET_FEATURES", reply={"features": 1})
        fe.close()
        be.close()
        harness.wait_sessions_ended(1)
        records, problem = harness.records()
    finally:
        harness.stop()
        guest.close()
    assert problem is None
    (snap,) = [r for r in records if isinstance(r, SnapshotRecord)]
    assert snap.trigger == "before:GET_VRING_BASE"
    assert snap.info["held"] is True and snap.info["exact"] is True


def test_a_killed_recorder_never_stops_the_relay(harness: ProxyHarness, capfd) -> None:
    fe, be = harness.connect()
    negotiate(fe, be)
    os.kill(harness.recorder.pid, signal.SIGKILL)
    before = None
    for i in range(200):
        call = os.eventfd(0)
        frame = build("SET_VRING_CALL", {"index": 0}, fds=(call,))
        fe.send(frame)
        os.close(call)
        got = be.read()
        assert got.raw == frame.raw and len(got.fds) == 1, f"message {i} changed"
        os.close(got.fds[0])
        if i == 50:
            before = len(open_fds())
    after = len(open_fds())
    assert harness.recorder.dead, "the relay should have noticed the recorder is gone"
    assert before is not None and after <= before + 2, f"fds: {before} before, {after} after"
    assert "killed (SIGKILL)" in harness.recorder.stats.failed
    harness.stop()
    assert "vhtrace: recording failed: the recorder process was killed" in capfd.readouterr().err


def test_fds_the_kernel_drops_on_the_way_to_the_recorder_cost_only_their_own_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorder's reads have room for one fd (as if it were short of fds): the kernel
    drops the second fd of A (MSG_CTRUNC). A's record still counts 2 fds, the second
    not described, with a finding; C, batched right after A, keeps its own fd."""
    monkeypatch.setattr(link, "_CMSG_SPACE", socket.CMSG_LEN(4))  # inherited by the fork
    harness = ProxyHarness(tmp_path, host="process", send_delay=0.05)
    try:
        fe, be = harness.connect()
        first, second, third = os.eventfd(0), os.eventfd(0), os.eventfd(0)
        a = build("SET_VRING_CALL", {"index": 0}, fds=(first, second))
        c = build("SET_VRING_KICK", {"index": 0}, fds=(third,))
        fe.send(a)
        fe.send(c)
        for expected in (a, c):
            got = be.read()
            assert got.raw == expected.raw and len(got.fds) == len(expected.fds)
            for fd in got.fds:
                os.close(fd)
        records, problem = harness.records()
    finally:
        harness.stop()
    assert problem is None
    recorded_a = next(m for m in messages(records) if m.raw == a.raw)
    recorded_c = next(m for m in messages(records) if m.raw == c.raw)
    assert len(recorded_a.fds) == 2, recorded_a.fds
    assert recorded_a.fds[0]["kind"] == "eventfd"
    assert recorded_a.fds[1]["kind"] == "other" and "not described" in recorded_a.fds[1]["error"]
    assert recorded_c.fds[0]["kind"] == "eventfd"
    assert recorded_c.fds[0]["ino"] == os.fstat(third).st_ino, "C got another message's fd"
    lost = [r.finding for r in records if isinstance(r, FindingRecord)
            and r.finding.code == "fd-metadata-lost"]  # fmt: skip
    assert [f.seq for f in lost] == [recorded_a.seq], lost
    assert "1 of 2 fds" in lost[0].text
    for fd in (first, second, third):
        os.close(fd)


class _CountingSocket:
    """The link's socket, with each sendmsg noted (bytes, fds)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends: list[tuple[int, int]] = []

    def sendmsg(self, parts, ancillary):  # type: ignore[no-untyped-def]
        sent = self.sock.sendmsg(parts, ancillary)
        fds = sum(len(fds) for _, _, fds in ancillary)  # arrays of fds
        self.sends.append((sent, fds))
        return sent

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.sock, name)


def test_a_batch_of_records_costs_the_relay_one_sendmsg(tmp_path: Path) -> None:
    """A batch goes as runs of bytes, not an item at a time (that was 300 us of the relay's
    time every 20 ms); an item with fds starts a sendmsg of its own, its fds on its first
    byte, and every item reaches the recorder in order."""
    writer = TraceWriter(str(tmp_path / "t.vht"), make_header())
    handover = link.RecorderLink(Recorder(writer), host="thread")
    counting = _CountingSocket(handover.sock)
    handover.sock = counting  # type: ignore[assignment]
    raw = build("GET_FEATURES").raw
    kick = os.eventfd(0)
    sizes = []
    for seq in range(1, 1001):
        record = MessageRecord(seq, seq, seq, 1, "main", "frontend", raw, (), 0)
        fds = [os.dup(kick)] if seq == 500 else []
        item = Relayed(record, len(fds))
        sizes.append(len(handoff.encode(item)))
        assert handover.submit(item, fds)
    handover.flush()
    before_fd_item = sum(sizes[:499])
    assert counting.sends == [(before_fd_item, 0), (sum(sizes) - before_fd_item, 1)]
    unpacker = handoff.unpacker()
    got, fds = 0, []
    while got < sum(sizes):
        data, ancdata, _, _ = handover._theirs.recvmsg(1 << 20, socket.CMSG_SPACE(16))
        fds += [fd for _, _, payload in ancdata for fd in array.array("i", payload)]
        unpacker.feed(data)
        got += len(data)
    items = [handoff.decode(fields) for fields in unpacker]
    assert [item.record.seq for item in items] == list(range(1, 1001))
    assert len(fds) == 1 and os.fstat(fds[0]).st_ino == os.fstat(kick).st_ino
    for fd in (*fds, kick):
        os.close(fd)
    handover.sock.close()
    handover._theirs.close()


@pytest.mark.parametrize("priority", PRIORITIES)
def test_the_recorder_process_gives_way_to_the_relay(tmp_path: Path, priority: str) -> None:
    """auto (default, where it may be raised again) and idle: SCHED_IDLE, so a woken relay
    or peer never waits for it; normal: a nice value above the relay's. Either way the
    recording works."""
    harness = ProxyHarness(tmp_path, host="process", priority=priority)
    try:
        fe, be = harness.connect()
        negotiate(fe, be)
        pid = harness.recorder.pid
        idle = priority == "idle" or (priority == "auto" and may_raise())
        assert os.sched_getscheduler(pid) == (os.SCHED_IDLE if idle else os.SCHED_OTHER)
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 5
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the relay's own is untouched
    finally:
        harness.stop()
    records, problem = harness.records()
    assert problem is None and len(messages(records)) >= 2, "nothing was recorded"


def test_an_unknown_recorder_priority_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one of auto, idle, normal"):
        ProxyHarness(tmp_path, host="process", priority="realtime")
