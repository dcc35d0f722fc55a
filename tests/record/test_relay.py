"""The recording proxy between fake peers: byte-exact, fds preserved, channels relayed."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from tests.record.harness import ProxyHarness, open_fds, same_file
from vhtrace.analysis import AnalysedMessage, Analyser
from vhtrace.protocol import spec
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel
from vhtrace.trace import format as fmt
from vhtrace.trace.records import EventRecord, FindingRecord, MessageRecord, StreamRecord

ALL_PROTOCOL = ((1 << 24) - 1) & ~(
    1 << spec.ProtocolFeature.XEN_MMAP | 1 << spec.ProtocolFeature.GPA_ADDRESSES
)
"""Every protocol feature but the two that change how addresses and regions read."""
FEATURES = 1 << spec.VIRTIO_F_VERSION_1 | 1 << spec.VIRTIO_F_PROTOCOL_FEATURES


@pytest.fixture
def harness(tmp_path: Path):
    h = ProxyHarness(tmp_path)
    yield h
    h.stop()


def negotiate(fe, be, protocol: int = ALL_PROTOCOL, set_protocol: bool = True) -> None:
    """GET_FEATURES / GET+SET_PROTOCOL_FEATURES through the proxy."""
    fe.send(build("GET_FEATURES"))
    be.read()
    be.send(build("GET_FEATURES", {"features": FEATURES}, reply=True))
    fe.read()
    fe.send(build("GET_PROTOCOL_FEATURES"))
    be.read()
    be.send(build("GET_PROTOCOL_FEATURES", {"features": protocol}, reply=True))
    fe.read()
    if set_protocol:
        fe.send(build("SET_PROTOCOL_FEATURES", {"features": protocol}))
        be.read()


def messages(records) -> list[MessageRecord]:
    return [r for r in records if isinstance(r, MessageRecord)]


def test_coalesced_and_split_messages_arrive_byte_exact(harness: ProxyHarness) -> None:
    fe, be = harness.connect()
    frames = [
        build("GET_FEATURES"),
        build("SET_OWNER"),
        build("SET_VRING_NUM", {"index": 0, "num": 256}),
        build("SET_VRING_ADDR", {"index": 0, "flags": 0, "desc_user_addr": 1,
                                 "used_user_addr": 2, "avail_user_addr": 3,
                                 "log_guest_addr": 4}),
    ]  # fmt: skip
    stream = b"".join(f.raw for f in frames)
    fe.send_raw(stream[:3])  # a header split over reads ...
    time.sleep(0.01)
    fe.send_raw(stream[3:30])  # ... and the rest coalesced with the next messages
    time.sleep(0.01)
    fe.send_raw(stream[30:])
    assert be.read_bytes(len(stream)) == stream
    records, problem = harness.records()
    assert problem is None
    assert [m.raw for m in messages(records)] == [f.raw for f in frames]
    assert [m.seq for m in messages(records)] == [1, 2, 3, 4]


def test_whole_messages_go_on_while_the_one_after_them_is_cut(harness: ProxyHarness) -> None:
    """The relay forwards the whole messages of what waits at once (as the one piece they
    came in); a message cut short behind them stays on the socket until it is whole."""
    fe, be = harness.connect()
    whole = [build("GET_FEATURES"), build("SET_OWNER")]
    cut = build("SET_VRING_NUM", {"index": 0, "num": 256})
    head = b"".join(f.raw for f in whole)
    fe.send_raw(head + cut.raw[:14])
    assert be.read_bytes(len(head)) == head, "held back by the message after them"
    time.sleep(0.01)
    fe.send_raw(cut.raw[14:])
    assert be.read_bytes(len(cut.raw)) == cut.raw
    records, problem = harness.records()
    assert problem is None
    assert [m.raw for m in messages(records)] == [f.raw for f in (*whole, cut)]


def test_fds_keep_their_message_and_order(harness: ProxyHarness) -> None:
    fe, be = harness.connect()
    memfds = [os.memfd_create(f"region{i}") for i in range(2)]
    for i, fd in enumerate(memfds):
        os.ftruncate(fd, (i + 1) << 20)
    table = build("SET_MEM_TABLE", {"nregions": 2, "regions": [
        {"guest_phys_addr": 0, "memory_size": 1 << 20, "userspace_addr": 1 << 40,
         "mmap_offset": 0},
        {"guest_phys_addr": 1 << 30, "memory_size": 2 << 20, "userspace_addr": 2 << 40,
         "mmap_offset": 0},
    ]}, fds=tuple(memfds))  # fmt: skip
    kick = os.eventfd(0)
    # QEMU sends back to back without waiting: these queue up together in the socket.
    fe.send(build("SET_PROTOCOL_FEATURES", {"features": 0}))
    fe.send(build("SET_OWNER"))
    fe.send(table)
    fe.send(build("SET_VRING_KICK", {"index": 0}, fds=(kick,)))
    got = [be.read() for _ in range(4)]
    assert [g.request for g in got] == [16, 3, 5, 12]
    assert got[0].fds == () and got[1].fds == ()
    assert len(got[2].fds) == 2
    assert all(same_file(a, b) for a, b in zip(got[2].fds, memfds, strict=True))
    assert len(got[3].fds) == 1 and same_file(got[3].fds[0], kick)
    assert got[2].raw == table.raw
    records, _ = harness.records()
    metas = [m.fds for m in messages(records)]
    assert [meta["kind"] for meta in metas[2]] == ["memfd", "memfd"]
    assert [meta["name"] for meta in metas[2]] == ["region0", "region1"]
    assert [meta["size"] for meta in metas[2]] == [1 << 20, 2 << 20]
    assert metas[3][0]["kind"] == "eventfd"


def test_replies_flow_back_unchanged(harness: ProxyHarness) -> None:
    fe, be = harness.connect()
    negotiate(fe, be)
    fe.send(build("GET_VRING_BASE", {"index": 0, "num": 0}))
    be.read()
    reply = build("GET_VRING_BASE", {"index": 0, "num": 77}, reply=True)
    be.send(reply)
    assert fe.read().raw == reply.raw


def test_backend_channel_is_interposed_and_recorded(harness: ProxyHarness) -> None:
    fe, be = harness.connect()
    negotiate(fe, be)
    qemu_end, given = socket.socketpair()
    fe.send(build("SET_BACKEND_REQ_FD", need_reply=True, fds=(given.fileno(),)))
    got = be.read()
    assert len(got.fds) == 1
    assert not same_file(got.fds[0], given.fileno()), "the back-end gets the proxy's socket"
    backend_channel = socket.socket(fileno=got.fds[0])
    be.send(build("SET_BACKEND_REQ_FD", {"value": 0}, reply=True))
    fe.read()
    # The back-end asks, QEMU answers, with an fd on the way (host notifier).
    notifier = os.memfd_create("notifier")
    request = build("VRING_HOST_NOTIFIER_MSG", {"index": 0, "size": 4096, "offset": 0},
                    channel=Channel.BACKEND, need_reply=True, fds=(notifier,))  # fmt: skip
    backend_channel.sendmsg([request.raw], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                             notifier.to_bytes(4, "little"))])  # fmt: skip
    from tests.record.harness import Peer

    qemu = Peer(qemu_end)
    got = qemu.read()
    assert got.raw == request.raw and len(got.fds) == 1 and same_file(got.fds[0], notifier)
    answer = build("VRING_HOST_NOTIFIER_MSG", {"value": 0}, channel=Channel.BACKEND,
                   reply=True)  # fmt: skip
    qemu.send(answer)
    assert Peer(backend_channel).read().raw == answer.raw
    records, _ = harness.records()
    on_channel = [m for m in messages(records) if m.channel == "backend"]
    assert [(m.sender, m.raw) for m in on_channel] == [
        ("backend", request.raw),
        ("frontend", answer.raw),
    ]
    assert on_channel[0].fds[0]["kind"] == "memfd"
    req_fd = next(m for m in messages(records) if m.header[0] == 21)
    assert req_fd.fds[0]["interposed"] == "backend"
    analysed = [i for i in Analyser().run(records) if isinstance(i, AnalysedMessage)]
    channel_items = [i for i in analysed if i.record.channel == "backend"]
    assert [i.analysis.role for i in channel_items] == ["request", "reply"]
    assert channel_items[1].analysis.answers == channel_items[0].record.seq
    assert not [f for i in analysed for f in i.analysis.findings if f.severity == "error"]


def test_device_state_pipe_is_interposed_and_recorded(harness: ProxyHarness) -> None:
    fe, be = harness.connect()
    negotiate(fe, be)
    read_end, write_end = os.pipe()  # save: the back-end writes, QEMU reads
    fe.send(build("SET_DEVICE_STATE_FD", {"direction": 0, "phase": 0}, fds=(write_end,)))
    os.close(write_end)
    got = be.read()
    assert len(got.fds) == 1 and not same_file(got.fds[0], read_end)
    be.send(build("SET_DEVICE_STATE_FD", {"error": 0, "nofd": True}, reply=True))
    fe.read()
    state = os.urandom(200_000)
    with os.fdopen(got.fds[0], "wb") as pipe:
        pipe.write(state)
    received = b""
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(65536):
            received += chunk
    assert received == state
    records, _ = harness.records()
    streams = [r for r in records if isinstance(r, StreamRecord)]
    assert b"".join(s.data for s in streams) == state
    assert {s.channel for s in streams} == {"device-state"}
    assert {s.sender for s in streams} == {"backend"}


def test_backend_death_closes_frontend_and_reconnect_is_new_session(
    harness: ProxyHarness,
) -> None:
    fe, be = harness.connect()
    negotiate(fe, be)
    be.close()
    assert fe.closed_by_peer(), "the proxy must close QEMU's side when the back-end dies"
    fe.close()
    fe2, be2 = harness.connect()
    fe2.send(build("GET_FEATURES"))
    assert be2.read().request == 1
    fe2.close()
    harness.wait_sessions_ended(2)
    records, _ = harness.records()
    events = [(r.session, r.event, r.info.get("reason")) for r in records
              if isinstance(r, EventRecord) and r.event.startswith("session")]  # fmt: skip
    assert events == [
        (1, "session-start", None), (1, "session-end", "backend closed"),
        (2, "session-start", None), (2, "session-end", "frontend closed"),
    ]  # fmt: skip


def test_backend_connects_topology(tmp_path: Path) -> None:
    harness = ProxyHarness(tmp_path, backend_connects=True)
    try:
        fe, be = harness.connect()
        fe.send(build("GET_FEATURES"))
        assert be.read().request == 1
        be.send(build("GET_FEATURES", {"features": FEATURES}, reply=True))
        assert fe.read().payload == FEATURES.to_bytes(8, "little")
    finally:
        harness.stop()


def test_no_fd_leak_over_1000_sessions(harness: ProxyHarness) -> None:
    def cycle() -> None:
        fe, be = harness.connect()
        call = os.eventfd(0)
        a, b = socket.socketpair()
        fe.send(build("SET_VRING_CALL", {"index": 0}, fds=(call,)))
        fe.send(build("SET_BACKEND_REQ_FD", fds=(b.fileno(),)))
        for frame in (be.read(), be.read()):
            for fd in frame.fds:
                os.close(fd)
        os.close(call)
        a.close()
        b.close()
        fe.close()
        be.close()

    cycle()
    harness.wait_sessions_ended(1)
    time.sleep(0.2)  # the recorder has closed its dups
    baseline = open_fds()
    for _ in range(1000):
        cycle()
    harness.wait_sessions_ended(1001, timeout=30)
    deadline = time.monotonic() + 5
    while open_fds() != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds() - baseline == set()


def test_strict_drops_the_connection_on_a_malformed_message(tmp_path: Path) -> None:
    harness = ProxyHarness(tmp_path, strict=True)
    try:
        fe, be = harness.connect()
        fe.send(build("GET_FEATURES"))
        assert be.read().request == 1
        fe.send_raw(build("GET_FEATURES").raw, (os.eventfd(0),))  # an fd it does not take
        assert be.closed_by_peer() and fe.closed_by_peer()
        records, _ = harness.records()
    finally:
        harness.stop()
    dropped = [m for m in messages(records) if m.flags & fmt.MESSAGE_DROPPED]
    assert len(dropped) == 1 and dropped[0].fds[0]["kind"] == "eventfd"
    assert any(isinstance(r, FindingRecord) and r.finding.code == "strict" for r in records)


def test_gpu_socket_is_interposed_and_recorded_as_a_stream(harness: ProxyHarness) -> None:
    from tests.record.harness import Peer

    fe, be = harness.connect()
    negotiate(fe, be)
    qemu_end, given = socket.socketpair()
    fe.send(build("GPU_SET_SOCKET", fds=(given.fileno(),)))
    got = be.read()
    assert len(got.fds) == 1 and not same_file(got.fds[0], given.fileno())
    gpu_backend = Peer(socket.socket(fileno=got.fds[0]))
    qemu = Peer(qemu_end)
    # vhost-user-gpu speaks its own protocol with the same 12-byte header; a cursor update
    # is bigger than any vhost-user message and must still arrive whole and unchanged.
    cursor = (3).to_bytes(4, "little") + (0).to_bytes(4, "little") + (16384 + 16).to_bytes(
        4, "little") + os.urandom(16384 + 16)  # fmt: skip
    dmabuf = os.memfd_create("scanout")
    gpu_backend.send_raw(cursor[:5000], (dmabuf,))
    gpu_backend.send_raw(cursor[5000:])
    received = qemu.sock.recvmsg(len(cursor) + 10, socket.CMSG_SPACE(4))
    data, ancillary = received[0], received[1]
    while len(data) < len(cursor):
        data += qemu.read_bytes(len(cursor) - len(data))
    assert data == cursor
    assert ancillary, "the dma-buf fd rides with the message"
    records, _ = harness.records()
    streams = [r for r in records if isinstance(r, StreamRecord) and r.channel == "gpu"]
    assert b"".join(s.data for s in streams) == cursor
    assert streams[0].sender == "backend" and streams[0].fds[0]["kind"] == "memfd"


def test_a_stalled_trace_writer_does_not_stall_the_relay(harness: ProxyHarness) -> None:
    """The disk hangs (the writer blocks); messages keep flowing between the peers."""
    import threading

    release = threading.Event()
    original = harness.writer.write

    def stuck_message(*args, **kwargs) -> None:
        release.wait(20)
        original(*args, **kwargs)

    harness.writer.write = stuck_message  # type: ignore[method-assign]
    fe, be = harness.connect()
    for i in range(50):
        fe.send(build("SET_VRING_NUM", {"index": 0, "num": 256}))
        assert be.read().payload == build("SET_VRING_NUM", {"index": 0, "num": 256}).payload
        be.send(build("SET_VRING_NUM", {"value": i}, reply=True))
        assert fe.read().payload == i.to_bytes(8, "little")
    assert not release.is_set()  # all of it went through while the writer was stuck
    release.set()
    records, problem = harness.records()
    assert problem is None
    assert len(messages(records)) == 100


@pytest.mark.parametrize("busy_poll", [0.0, 0.05])
def test_busy_poll_keeps_the_relay_awake_only_as_long_as_asked(
    tmp_path: Path, busy_poll: float
) -> None:
    """--busy-poll: after a message the loop polls (select with no timeout) for that long,
    then sleeps again; with 0 it never polls."""
    harness = ProxyHarness(tmp_path, busy_poll=busy_poll)
    try:
        fe, be = harness.connect()
        polls: list[float] = []
        select = harness.proxy.selector.select

        def counted(timeout=None):  # type: ignore[no-untyped-def]
            if timeout == 0:
                polls.append(time.monotonic())
            return select(timeout)

        harness.proxy.selector.select = counted  # type: ignore[method-assign]
        frame = build("GET_FEATURES")
        fe.send(frame)
        assert be.read().raw == frame.raw
        sent = time.monotonic()
        time.sleep(busy_poll + 0.2)
        if busy_poll:
            assert len(polls) > 100, len(polls)
            # it stopped: nothing polled well after the window closed
            assert all(t < sent + busy_poll + 0.1 for t in polls)
        else:
            assert len(polls) < 10, len(polls)  # the odd due batch, no polling
    finally:
        harness.stop()
