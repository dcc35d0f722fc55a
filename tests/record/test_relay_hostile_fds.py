"""Issue 17: fds that kill a relay (wrong kinds, too many, a full disk), through real sockets.

Each case: the proxy stays alive (a normal message still gets through), bytes and fds
arrive unchanged, and the trace holds the message with the finding that names it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.record.harness import Peer, ProxyHarness, Recording, open_fds, same_file
from tests.record.test_relay import messages, negotiate
from vhtrace.protocol import spec
from vhtrace.protocol.framing import pack_header, split_fds
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel
from vhtrace.record import relay
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EndRecord, EventRecord, FindingRecord, MessageRecord


@pytest.fixture
def harness(tmp_path: Path):
    h = ProxyHarness(tmp_path)
    yield h
    h.stop()


def rights(fds: list[int]) -> list[tuple[int, int, bytes]]:
    """SCM_RIGHTS ancillary data carrying ``fds``."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(f.to_bytes(4, "little") for f in fds))]


def findings(records: list, code: str) -> list[str]:
    return [str(r.finding) for r in records if isinstance(r, FindingRecord)
            and r.finding.code == code]  # fmt: skip


def still_relays(fe: Peer, be: Peer) -> None:
    probe = build("SET_VRING_NUM", {"index": 0, "num": 64})
    fe.send(probe)
    got = be.read()
    assert got.raw == probe.raw, f"after the bad input: expected {probe.raw!r}, got {got.raw!r}"


def an_eventfd() -> tuple[int, list[int]]:
    fd = os.eventfd(0)
    return fd, [fd]


def a_memfd() -> tuple[int, list[int]]:
    fd = os.memfd_create("not-a-socket")
    return fd, [fd]


def a_pipe() -> tuple[int, list[int]]:
    r, w = os.pipe()
    return r, [r, w]


def an_unconnected_socket() -> tuple[int, list[int]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    return sock.detach(), []


KINDS: dict[str, tuple[Callable[[], tuple[int, list[int]]], str, str]] = {
    "eventfd": (an_eventfd, "eventfd", "an eventfd"),
    "memfd": (a_memfd, "memfd", "a memfd"),
    "pipe": (a_pipe, "pipe", "a pipe"),
    "unconnected": (an_unconnected_socket, "socket", "an unconnected unix stream socket"),
}


@pytest.mark.parametrize("strict", [False, True], ids=["relay", "strict"])
@pytest.mark.parametrize("request_name", ["SET_BACKEND_REQ_FD", "GPU_SET_SOCKET"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_channel_fd_of_the_wrong_kind_is_relayed_as_it_came(
    tmp_path: Path, kind: str, request_name: str, strict: bool
) -> None:
    h = ProxyHarness(tmp_path, strict=strict)
    try:
        fe, be = h.connect()
        negotiate(fe, be)
        make, recorded_kind, words = KINDS[kind]
        fd, extra_fds = make()
        message = build(request_name, fds=(fd,))
        fe.send(message)
        if strict:
            assert be.closed_by_peer() and fe.closed_by_peer(), "--strict drops the session"
        else:
            got = be.read()
            assert got.raw == message.raw
            assert len(got.fds) == 1, f"fds: expected 1, got {len(got.fds)}"
            assert same_file(got.fds[0], fd), "not interposed: the back-end gets the same fd"
            os.close(got.fds[0])
            still_relays(fe, be)
        for f in extra_fds or [fd]:
            os.close(f)
        records, problem = h.records()
    finally:
        h.stop()
    assert problem is None
    assert h.thread.is_alive() is False and h.proxy._stop
    recorded = [m for m in messages(records) if m.header[0] == message.request]
    assert len(recorded) == 1, f"{request_name}: expected 1 record, got {len(recorded)}"
    assert recorded[0].fds[0]["kind"] == recorded_kind
    assert "interposed" not in recorded[0].fds[0]
    texts = findings(records, "channel-fd")
    seq = recorded[0].seq
    assert texts == [f"#{seq} {request_name}: {words}, a unix stream socket is due"], texts
    if strict:
        assert recorded[0].flags & fmt.MESSAGE_DROPPED
    channel_events = [r for r in records if isinstance(r, EventRecord)
                      and r.event.endswith("-channel")]  # fmt: skip
    assert channel_events == [], "no channel was opened for a wrong fd"


@pytest.mark.parametrize("from_backend", [False, True], ids=["frontend", "backend-reply"])
def test_a_device_state_memfd_is_relayed_as_it_came(tmp_path: Path, from_backend: bool) -> None:
    h = ProxyHarness(tmp_path)
    try:
        fe, be = h.connect()
        negotiate(fe, be)
        memfd = os.memfd_create("state")
        if from_backend:
            r, w = os.pipe()
            fe.send(build("SET_DEVICE_STATE_FD", {"direction": 0, "phase": 0}, fds=(w,)))
            os.close(w)
            got = be.read()
            for f in got.fds:
                os.close(f)
            message = build("SET_DEVICE_STATE_FD", {"error": 0, "nofd": False}, reply=True,
                            fds=(memfd,))  # fmt: skip
            be.send(message)
            got = fe.read()
            os.close(r)
        else:
            message = build("SET_DEVICE_STATE_FD", {"direction": 0, "phase": 0}, fds=(memfd,))
            fe.send(message)
            got = be.read()
        assert got.raw == message.raw and len(got.fds) == 1
        assert same_file(got.fds[0], memfd)
        os.close(got.fds[0])
        os.close(memfd)
        still_relays(fe, be)
        records, problem = h.records()
    finally:
        h.stop()
    assert problem is None
    sender = "backend" if from_backend else "frontend"
    recorded = [m for m in messages(records) if m.header[0] == 42 and m.sender == sender]
    assert len(recorded) == 1 and recorded[0].fds[0]["kind"] == "memfd"
    assert findings(records, "channel-fd") == [
        f"#{recorded[0].seq} SET_DEVICE_STATE_FD: a memfd, a pipe is due"
    ]


def test_split_fds_keeps_order_and_the_kernel_limit() -> None:
    assert split_fds(400, 0) == [(400, 0)]
    assert split_fds(12, 253) == [(12, 253)]
    assert split_fds(12, 400) == [(1, 253), (11, 147)]
    assert split_fds(2, 507) is None
    pieces = split_fds(100, 1000)
    assert pieces is not None
    assert sum(b for b, _ in pieces) == 100 and sum(f for _, f in pieces) == 1000
    assert all(f <= spec.SCM_MAX_FD for _, f in pieces)


def test_one_message_with_400_fds_over_two_sendmsgs_is_relayed(harness: ProxyHarness) -> None:
    fe, be = harness.connect()
    payload = os.urandom(400)
    raw = pack_header(8, 1, len(payload)) + payload
    fds = [os.eventfd(i) for i in range(400)]
    fe.sock.sendmsg([raw[:200]], rights(fds[:200]))
    fe.sock.sendmsg([raw[200:]], rights(fds[200:]))
    data, got_fds = b"", []
    be.sock.settimeout(5)
    while len(data) < len(raw):
        chunk, ancillary, _, _ = be.sock.recvmsg(len(raw) - len(data), socket.CMSG_SPACE(4 * 253))
        assert chunk, f"the proxy closed after {len(data)} of {len(raw)} bytes"
        data += chunk
        for _, _, blob in ancillary:
            got_fds += [int.from_bytes(blob[i : i + 4], "little") for i in range(0, len(blob), 4)]
    assert data == raw
    assert len(got_fds) == 400, f"fds: expected 400, got {len(got_fds)}"
    for i, (mine, theirs) in enumerate(zip(fds, got_fds, strict=True)):
        assert same_file(mine, theirs), f"fd {i} out of order"
    for f in fds + got_fds:
        os.close(f)
    still_relays(fe, be)
    records, _ = harness.records()
    recorded = [m for m in messages(records) if m.raw == raw]
    assert len(recorded) == 1 and len(recorded[0].fds) == 400


def test_fds_queued_for_a_stalled_backend_are_bounded(harness: ProxyHarness) -> None:
    """The back-end stops reading; the front-end sends small messages with an eventfd each."""
    fe, be = harness.connect()
    baseline = len(open_fds())
    fe.sock.setblocking(False)
    message = build("SET_VRING_CALL", {"index": 0, "nofd": False})
    sent = 0
    stalled = 0
    while stalled < 200 and sent < 20_000:
        fd = os.eventfd(0)
        try:
            fe.sock.sendmsg([message.raw], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                             fd.to_bytes(4, "little"))])  # fmt: skip
            sent += 1
            stalled = 0
        except BlockingIOError:
            stalled += 1
            time.sleep(0.001)  # not a timing assertion: waits for the proxy to stop reading
        finally:
            os.close(fd)
    held = len(open_fds()) - baseline  # the proxy runs in this process
    limit = relay.PAUSE_FDS + 2 * spec.SCM_MAX_FD + 64
    assert held <= limit, f"fds held by the proxy: expected at most {limit}, got {held}"
    assert sent < 20_000, "the proxy never stopped reading"
    fe.sock.setblocking(True)
    fe.sock.settimeout(5)
    received = 0
    while received < sent:
        got = be.read()
        assert got.raw == message.raw, f"message {received}: got {got.raw!r}"
        assert len(got.fds) == 1
        os.close(got.fds[0])
        received += 1
    still_relays(fe, be)


def test_a_recorder_at_a_low_fd_limit_keeps_every_fd_on_its_message(tmp_path: Path) -> None:
    """A real ``vhtrace record`` with 96 fds at most (hard limit): the back-end stalls
    while the front-end sends 600 messages with an eventfd each. Past its limit the kernel
    would drop the fds of a message it reads (MSG_CTRUNC); the relay reads no message
    whose fds might not fit, so every one arrives with its fd, and the recorder sheds
    their metadata instead, with a finding that counts them."""
    rec = Recording(tmp_path, fd_limit=96)
    fe, be = rec.session()
    count = 600
    sent: list[bytes] = []

    def send_all_of_them() -> None:
        for index in range(count):
            fd = os.eventfd(0)
            message = build("SET_VRING_KICK", {"index": index % 2}, fds=(fd,))
            fe.send(message)
            sent.append(message.raw)
            os.close(fd)

    sender = threading.Thread(target=send_all_of_them)
    sender.start()
    time.sleep(1)  # the back-end reads nothing meanwhile (not a timing assertion)
    be.sock.settimeout(30)
    for index in range(count):
        got = be.read()
        assert len(got.fds) == 1, f"message {index}: expected 1 fd, got {len(got.fds)}"
        assert got.raw == sent[index], f"message {index}: bytes differ"
        os.close(got.fds[0])
    sender.join()
    code, _, err = rec.finish()
    assert code == 0, err
    with TraceReader(rec.trace) as reader:
        records = list(reader)
        assert reader.problem is None
    assert sum(isinstance(r, MessageRecord) for r in records) == count
    assert not findings(records, "fd-truncated"), "the kernel dropped fds"
    shed = findings(records, "fd-metadata-shed")
    assert all(len(m.fds) == 1 for m in messages(records)), "each message counts its fd"
    recorded = sum(1 for m in messages(records) if "error" not in m.fds[0])
    assert shed, "no fd-metadata-shed finding"
    total_shed = int(re.search(r"(\d+) shed so far", shed[-1]).group(1))
    assert recorded + total_shed == count, (shed[-1], recorded)


def test_fds_inside_an_oversized_message_are_recorded(harness: ProxyHarness) -> None:
    fe, be = harness.connect()
    size = 6000
    raw = pack_header(1, 1, size) + os.urandom(size)
    head, tail = os.memfd_create("head"), os.memfd_create("tail")
    fe.sock.sendmsg([raw[:100]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   head.to_bytes(4, "little"))])  # fmt: skip
    fe.sock.sendmsg([raw[100:]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   tail.to_bytes(4, "little"))])  # fmt: skip
    assert be.read_bytes(len(raw)) == raw
    still_relays(fe, be)
    records, _ = harness.records()
    recorded = [m for m in messages(records) if m.flags & fmt.MESSAGE_OVERSIZED]
    assert len(recorded) == 1
    assert [f.get("name") for f in recorded[0].fds] == ["head", "tail"], recorded[0].fds


def test_an_oversized_message_cut_by_eof_keeps_the_oversized_flag(harness: ProxyHarness) -> None:
    fe, be = harness.connect()
    raw = pack_header(1, 1, 10_000) + b"x" * 5000
    fe.send_raw(raw)
    assert be.read_bytes(len(raw)) == raw
    fe.close()
    assert be.closed_by_peer()
    records, _ = harness.records()
    cut = [m for m in messages(records) if m.flags & fmt.MESSAGE_INCOMPLETE]
    assert len(cut) == 1
    assert cut[0].flags & fmt.MESSAGE_OVERSIZED, f"flags: expected oversized, got {cut[0].flags}"


def test_a_dead_recorder_gets_no_more_fds_and_says_where_recording_stopped(
    harness: ProxyHarness,
) -> None:
    original = harness.writer.write
    calls = {"n": 0}

    def disk_full(record, *args, **kwargs) -> None:
        calls["n"] += isinstance(record, MessageRecord)
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        original(record, *args, **kwargs)

    harness.writer.write = disk_full  # type: ignore[method-assign]
    fe, be = harness.connect()
    before = None
    for i in range(60):
        fd = os.eventfd(0)
        message = build("SET_VRING_CALL", {"index": 0, "nofd": False}, fds=(fd,))
        fe.send(message)
        os.close(fd)
        got = be.read()
        assert got.raw == message.raw and len(got.fds) == 1
        os.close(got.fds[0])
        if i == 10:
            harness.recorder.join(5)
            assert not harness.recorder.is_alive(), "the recorder should have died"
            before = len(os.listdir("/proc/self/fd"))
    after = len(os.listdir("/proc/self/fd"))
    # a leak would hold one fd per message (~50); allow the odd transient fd of the process
    assert before is not None and after <= before + 3, f"fds: {before} before, {after} after"
    stats = harness.recorder.stats
    assert stats.unrecorded_from == 3, f"unrecorded from: expected #3, got {stats.unrecorded_from}"
    assert "nothing recorded from message #3 on" in stats.summary_line("t.vht")
    records, _ = harness.records()
    ends = [r for r in records if isinstance(r, EndRecord)]
    assert len(ends) == 1, f"end records: expected 1, got {len(ends)}"
    assert ends[0].summary.get("unrecorded_from") == 3, ends[0].summary
    assert "No space left" in ends[0].summary.get("failed", ""), ends[0].summary
    assert [m.seq for m in messages(records)] == [1, 2], "what came before the failure stays"


def test_emfile_while_duplicating_for_the_recorder_sheds_metadata(harness: ProxyHarness) -> None:
    import resource

    fe, be = harness.connect()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd = os.eventfd(0)
    message = build("SET_VRING_CALL", {"index": 0, "nofd": False}, fds=(fd,))
    real_dup = os.dup

    def no_fds(fd_: int) -> int:
        raise OSError(24, "Too many open files")

    relay.os.dup = no_fds  # type: ignore[attr-defined]
    try:
        fe.send(message)
        got = be.read()
    finally:
        relay.os.dup = real_dup  # type: ignore[attr-defined]
    assert got.raw == message.raw and len(got.fds) == 1 and same_file(got.fds[0], fd)
    os.close(got.fds[0])
    os.close(fd)
    still_relays(fe, be)
    records, _ = harness.records()
    recorded = [m for m in messages(records) if m.raw == message.raw]
    assert len(recorded) == 1, recorded
    # still one fd on the message (it carried one), described as not described
    assert [m["kind"] for m in recorded[0].fds] == ["other"]
    assert "not described" in recorded[0].fds[0]["error"]
    texts = findings(records, "fd-metadata-shed")
    assert texts and texts[0].startswith(f"#{recorded[0].seq} "), texts
    assert "1 shed so far" in texts[0]
    assert (soft, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
    assert isinstance(recorded[0], MessageRecord)


FD_KINDS = ("eventfd", "memfd", "pipe-read", "pipe-write", "socketpair", "unconnected")
CHANNEL_REQUESTS = ("SET_BACKEND_REQ_FD", "GPU_SET_SOCKET", "SET_DEVICE_STATE_FD")


def make_fd(kind: str, keep: list) -> int:
    """A real fd of ``kind``; what must stay open (or be closed later) goes to ``keep``."""
    if kind == "eventfd":
        fd = os.eventfd(0)
    elif kind == "memfd":
        fd = os.memfd_create("h")
    elif kind in ("pipe-read", "pipe-write"):
        r, w = os.pipe()
        fd, other = (r, w) if kind == "pipe-read" else (w, r)
        keep.append(other)
    elif kind == "socketpair":
        a, b = socket.socketpair()
        keep.append(a)
        fd = b.detach()
    else:
        fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach()
    keep.append(fd)
    return fd


def interposed(request_name: str, kind: str) -> bool:
    if request_name == "SET_DEVICE_STATE_FD":
        return kind.startswith("pipe")
    return request_name in CHANNEL_REQUESTS and kind == "socketpair"


def test_random_streams_of_fd_kinds_are_relayed_byte_exact() -> None:
    import tempfile

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    message = st.tuples(
        st.sampled_from(("SET_VRING_KICK", "SET_VRING_NUM", *CHANNEL_REQUESTS)),
        st.lists(st.sampled_from(FD_KINDS), min_size=0, max_size=3),
    )

    examples = int(os.environ.get("VHTRACE_CAMPAIGN_EXAMPLES") or 60)  # scripts/hostile-campaign

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(message, min_size=1, max_size=8))
    def run(stream: list[tuple[str, list[str]]]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            h = ProxyHarness(Path(directory))
            keep: list = []
            try:
                fe, be = h.connect()
                for number, (name, kinds) in enumerate(stream, 1):
                    fds = tuple(make_fd(kind, keep) for kind in kinds)
                    raw = build("SET_VRING_NUM", {"index": 0, "num": number}).raw
                    if name != "SET_VRING_NUM":
                        found = spec.lookup_request(name)
                        assert found is not None
                        header = pack_header(found[1], 1, len(raw) - 12)
                        raw = header + raw[12:]
                    fe.send_raw(raw, fds)
                    got = be.read()
                    assert got.raw == raw, f"message {number} {name}: expected {raw!r}"
                    assert len(got.fds) == len(fds), (
                        f"message {number} {name}: fds expected {len(fds)}, got {len(got.fds)}"
                    )
                    for index, (kind, mine, theirs) in enumerate(
                        zip(kinds, fds, got.fds, strict=True)
                    ):
                        if not (len(fds) == 1 and interposed(name, kind)):
                            assert same_file(mine, theirs), f"message {number} fd {index} {kind}"
                        os.close(theirs)
                still_relays(fe, be)
                assert h.thread.is_alive(), "the proxy died"
                records, problem = h.records()
            finally:
                h.stop()
                for item in keep:
                    if isinstance(item, socket.socket):
                        item.close()
                    else:
                        with contextlib.suppress(OSError):
                            os.close(item)
            assert problem is None
            recorded = [m for m in messages(records) if m.channel == "main"]
            assert len(recorded) == len(stream) + 1
            for (_, kinds), record in zip(stream, recorded[:-1], strict=True):
                assert len(record.fds) == len(kinds), record

    run()


class FailingSocket(socket.socket):
    """A socket whose reads fail as an unconnected one's do (EINVAL)."""

    def recvmsg(self, *args: object) -> tuple:  # type: ignore[override]
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))


def test_an_io_error_on_an_interposed_channel_ends_that_channel_only(
    harness: ProxyHarness,
) -> None:
    fe, be = harness.connect()
    negotiate(fe, be)
    qemu_end, given = socket.socketpair()
    fe.send(build("SET_BACKEND_REQ_FD", fds=(given.fileno(),)))
    got = be.read()
    given.close()
    backend_channel = socket.socket(fileno=got.fds[0])
    session = next(iter(harness.proxy.sessions.values()))
    endpoint = next(e for e in session.endpoints
                    if e.channel == "backend" and e.sender.value == "frontend")  # fmt: skip
    # The channel is idle: swap in a socket whose next read fails.
    endpoint.sock = FailingSocket(fileno=endpoint.sock.detach())
    qemu_end.sendall(build("VRING_CALL", {"index": 0, "num": 0}, channel=Channel.BACKEND).raw)
    assert Peer(backend_channel).closed_by_peer(), "the failed channel is closed"
    still_relays(fe, be)
    qemu_end.close()
    backend_channel.close()
    records, _ = harness.records()
    texts = findings(records, "io-error")
    assert texts == ["backend/frontend: reading failed: Invalid argument"], texts
    closed = [r for r in records if isinstance(r, EventRecord)
              and r.event == "backend-channel-closed"]  # fmt: skip
    assert closed and closed[0].info.get("by") == "error", closed
    ends = [r for r in records if isinstance(r, EventRecord) and r.event == "session-end"]
    assert ends and ends[0].info["reason"] == fmt.END_RECORDER_STOPPED, "the session went on"


def test_out_of_fds_when_interposing_relays_the_fd_as_it_came(
    harness: ProxyHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    fe, be = harness.connect()
    negotiate(fe, be)
    qemu_end, given = socket.socketpair()

    def no_fds(*args: object) -> tuple[socket.socket, socket.socket]:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    message = build("SET_BACKEND_REQ_FD", fds=(given.fileno(),))
    monkeypatch.setattr(relay.socket, "socketpair", no_fds)
    fe.send(message)
    got = be.read()
    monkeypatch.undo()
    assert got.raw == message.raw and len(got.fds) == 1
    assert same_file(got.fds[0], given.fileno()), "relayed as it came"
    os.close(got.fds[0])
    still_relays(fe, be)
    os.fstat(given.fileno())  # the sender's fd was not closed by the failed attempt
    given.close()
    qemu_end.close()
    records, _ = harness.records()
    recorded = [m for m in messages(records) if m.raw == message.raw]
    texts = findings(records, "interpose-failed")
    assert texts == [f"#{recorded[0].seq} SET_BACKEND_REQ_FD: the backend channel could not be "
                     "relayed through the proxy (Too many open files): fd passed on as it "
                     "came, its channel not recorded"], texts  # fmt: skip
    assert recorded[0].fds[0]["not_interposed"] == "Too many open files"
