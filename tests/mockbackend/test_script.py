"""The scripting API over a fake front-end: devices, overrides, hooks, faults, expectations,
the back-end channel and the postcopy memory-table exchange."""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from mockbackend import (
    Answer,
    BlkDevice,
    Close,
    Delay,
    Drop,
    ExtraFds,
    Garbage,
    MissingFds,
    RngDevice,
    Script,
    WrongFlags,
    WrongRequest,
    WrongSize,
    expect,
)
from mockbackend.devices import blk
from mockbackend.testing import GUEST_SIZE, UADDR, Driver, FakeFrontend, kick, wait_used
from vhtrace import wire
from vhtrace.protocol import spec
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import ProtocolFeature

DISK = 1 << 20


@pytest.fixture
def image(tmp_path) -> Iterator:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(DISK))
    yield path


def blk_request(
    driver: Driver, kind: int, sector: int, data: bytes | int, writable: bool
) -> tuple[int, int, int]:
    """Queue one virtio-blk request; (head, data address, status address)."""
    header = driver.buffer(struct.pack("<IIQ", kind, 0, sector))
    size = data if isinstance(data, int) else len(data)
    body = driver.buffer(data) if size else 0
    status = driver.buffer(b"\xff")
    parts = [(header, 16, False)]
    if size:
        parts.append((body, size, writable))
    parts.append((status, 1, True))
    head = driver.chain(parts)
    driver.make_available(head)
    return head, body, status


def started(script: Script) -> tuple[FakeFrontend, Driver, int, int]:
    fe = FakeFrontend(script)
    fe.negotiate()
    fe.set_mem_table()
    driver = Driver(fe.ram, size=64)
    kick_fd, call_fd = fe.start_ring(0, driver)
    return fe, driver, kick_fd, call_fd


def test_blk_serves_every_request_type(image) -> None:
    original = image.read_bytes()
    device = BlkDevice(image, serial="serial-123")
    fe, driver, kick_fd, call_fd = started(Script(device))

    _, read_at, read_status = blk_request(driver, blk.T_IN, 8, 4096, writable=True)
    payload = os.urandom(1024)
    _, _, write_status = blk_request(driver, blk.T_OUT, 100, payload, writable=False)
    _, _, flush_status = blk_request(driver, blk.T_FLUSH, 0, 0, writable=False)
    _, id_at, id_status = blk_request(driver, blk.T_GET_ID, 0, 20, writable=True)
    segment = struct.pack("<QII", 200, 4, 0)
    _, _, discard_status = blk_request(driver, blk.T_DISCARD, 0, segment, writable=False)
    _, _, zeroes_status = blk_request(
        driver, blk.T_WRITE_ZEROES, 0, struct.pack("<QII", 300, 2, 0), writable=False
    )
    _, _, bad_status = blk_request(driver, 77, 0, 0, writable=False)
    _, _, range_status = blk_request(driver, blk.T_IN, DISK // 512, 512, writable=True)
    kick(kick_fd)
    wait_used(driver, 8)

    assert driver.read(read_at, 4096) == original[8 * 512 : 8 * 512 + 4096]
    assert driver.used_entry(0)[1] == 4097
    data = image.read_bytes()
    assert data[100 * 512 : 100 * 512 + 1024] == payload
    assert driver.read(id_at, 20) == b"serial-123".ljust(20, b"\0")
    assert data[200 * 512 : 204 * 512] == bytes(4 * 512)
    assert data[300 * 512 : 302 * 512] == bytes(2 * 512)
    statuses = [
        driver.read(a, 1)[0]
        for a in (read_status, write_status, flush_status, id_status, discard_status, zeroes_status)
    ]
    assert statuses == [blk.S_OK] * 6
    assert driver.read(bad_status, 1)[0] == blk.S_UNSUPP
    assert driver.read(range_status, 1)[0] == blk.S_IOERR
    assert int.from_bytes(os.read(call_fd, 8), "little") >= 1  # the guest was interrupted
    assert fe.ask("GET_VRING_BASE", {"index": 0, "num": 0})["num"] == 8
    wire.close_fds([kick_fd, call_fd])
    report = fe.close()
    assert report.errors == [] and report.violations == []
    device.close()


def test_rng_fills_the_buffers_it_is_given() -> None:
    device = RngDevice(source=lambda n: bytes(range(256)) * (n // 256 + 1))
    fe, driver, kick_fd, call_fd = started(Script(device))
    where = driver.buffer(300)
    driver.make_available(driver.chain([(where, 300, True)]))
    kick(kick_fd)
    wait_used(driver, 1)
    assert driver.used_entry(0) == (0, 300)
    assert driver.read(where, 300) == (bytes(range(256)) * 2)[:300]
    wire.close_fds([kick_fd, call_fd])
    fe.close()


def test_declared_identity_is_what_the_front_end_reads(image) -> None:
    config = bytes(range(40))
    script = Script(BlkDevice(image), features=1 << 32, config=config, queues=3)
    script.protocol_features |= 1 << ProtocolFeature.STATUS
    fe = FakeFrontend(script)
    assert fe.ask("GET_FEATURES")["features"] == 1 << 32 | 1 << 30
    assert fe.ask("GET_PROTOCOL_FEATURES")["features"] >> ProtocolFeature.STATUS & 1
    fe.send("SET_PROTOCOL_FEATURES", {"features": script.protocol_features})
    assert fe.ask("GET_QUEUE_NUM") == {"value": 3}
    reply = fe.ask("GET_CONFIG", {"offset": 4, "size": 10, "flags": 0})
    assert reply["size"] == 10 and reply["region"] == config[4:14]
    fe.send("SET_STATUS", {"status": 0xF})
    assert fe.ask("GET_STATUS") == {"status": 0xF}
    fe.close()


def test_override_and_hooks_see_every_message_in_order(image) -> None:
    script = Script(BlkDevice(image))
    seen: list[str] = []

    @script.on("GET_QUEUE_NUM")
    def queue_num(ctx, msg) -> Answer:
        default = ctx.default(msg)
        assert default is not None and default.fields == {"value": 1}
        return Answer.u64(42)

    @script.before()
    def before(ctx, msg) -> None:
        seen.append(f"before {msg.name}")

    @script.after("GET_QUEUE_NUM")
    def after(ctx, msg, reply) -> None:
        seen.append(f"after {msg.name} -> {reply.fields}")

    @script.on("SET_OWNER")
    def broken(ctx, msg) -> None:
        raise RuntimeError("a bug in the script")

    fe = FakeFrontend(script)
    fe.negotiate()
    assert fe.ask("GET_QUEUE_NUM") == {"value": 42}
    assert fe.ask("GET_FEATURES")  # still serving after the script raised
    report = fe.close()
    assert "after GET_QUEUE_NUM -> {'value': 42}" in seen
    assert seen.index("before GET_QUEUE_NUM") < seen.index("after GET_QUEUE_NUM -> {'value': 42}")
    [error] = report.script_errors
    assert "handler raised at " in error and "RuntimeError: a bug in the script" in error
    assert f"{__file__}, line " in error  # the line of the raise, in this file
    assert not report.ok()


def test_need_reply_gets_an_ack_only_under_reply_ack(image) -> None:
    fe = FakeFrontend(Script(BlkDevice(image)))
    fe.negotiate()
    assert fe.ask("SET_VRING_NUM", {"index": 0, "num": 64}, need_reply=True) == {"value": 0}
    report = fe.close()
    assert report.violations == []


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (Delay(0.05), lambda f: f.flags == spec.REPLY_FLAGS and len(f.payload) == 8),
        (WrongFlags(0x1), lambda f: f.flags == 0x1),
        (WrongFlags(0x5 | 0x8), lambda f: f.flags == 0xD),
        (WrongSize(4), lambda f: f.size == 4 and len(f.payload) == 4),
        (WrongSize(16), lambda f: f.size == 16 and f.payload[8:] == bytes(8)),
        (WrongRequest("GET_STATUS"), lambda f: f.request == 40),
        (ExtraFds(2), lambda f: len(f.fds) == 2),
    ],
    ids=[
        "delay",
        "flags-no-reply-bit",
        "flags-need-reply",
        "short",
        "long",
        "request-id",
        "extra-fds",
    ],
)
def test_reply_faults_change_what_is_sent(image, fault, check) -> None:
    script = Script(BlkDevice(image))
    armed = script.fault(fault, on="GET_FEATURES", nth=2)
    fe = FakeFrontend(script)
    assert fe.ask("GET_FEATURES")  # the first one is fine
    fe.send("GET_FEATURES")
    frame = fe.read()
    assert check(frame), frame
    wire.close_fds(frame.fds)
    report = fe.close()
    assert armed.fired and report.unused_faults == []
    if not isinstance(fault, Delay):
        assert report.own, "the mock's own checks should flag the faulty reply"


def test_missing_fds_and_drop(image) -> None:
    script = Script(BlkDevice(image))
    script.fault(MissingFds(), on="GET_INFLIGHT_FD")
    script.fault(Drop(), on="GET_QUEUE_NUM")
    fe = FakeFrontend(script)
    fe.negotiate()
    fe.send("GET_INFLIGHT_FD", {"num_queues": 1, "queue_size": 64})
    reply = fe.read()
    assert reply.fds == () and struct.unpack_from("<Q", reply.payload)[0] > 0
    fe.send("GET_QUEUE_NUM")  # dropped: the next reply is GET_FEATURES'
    fe.send("GET_FEATURES")
    assert fe.read().request == 1
    report = fe.close()
    assert any(f.code == "no-reply" for f in report.own)


def test_close_at_message_n_and_garbage(image) -> None:
    script = Script(BlkDevice(image))
    script.fault(Garbage(b"\xff" * 12), on="GET_PROTOCOL_FEATURES")
    script.fault(Close(), at=3)
    fe = FakeFrontend(script)
    fe.send("GET_FEATURES")
    fe.read()
    fe.send("GET_PROTOCOL_FEATURES")
    assert fe.sock.recv(64) == b"\xff" * 12  # instead of the reply
    fe.send("SET_OWNER")  # message 3: the mock hangs up
    assert fe.sock.recv(64) == b""
    report = fe.close()
    assert "closed by fault Close" in report.closed_by


def test_expectations_are_reported_at_the_end(image) -> None:
    script = Script(BlkDevice(image))
    script.expect(expect.kick_before_enable())
    script.expect(expect.received("GET_CONFIG"))
    script.expect(expect.never("RESET_OWNER"))
    script.expect(expect.order("SET_OWNER", "SET_MEM_TABLE"))
    script.expect(expect.no_violations())
    fe = FakeFrontend(script)
    fe.negotiate()
    fe.set_mem_table()
    fe.ask("SET_VRING_ENABLE", {"index": 0, "num": 1}, need_reply=True)  # no kick before
    fe.send("RESET_OWNER")
    fe.send("SET_VRING_NUM", {"index": 0, "num": 3})
    fe.ask("GET_FEATURES")
    report = fe.close()
    text = "\n".join(report.expectation_failures)
    assert "ring 0 enabled before its kick fd" in text
    assert "expected GET_CONFIG at least 1 time, received 0" in report.expectation_failures
    [reset] = [line for line in report.expectation_failures if "RESET_OWNER" in line]
    assert re.fullmatch(r"expected RESET_OWNER 0 times, received 1 \(#\d+\)", reset), reset
    assert "ring size 3 is not a power of two" in text
    assert "SET_OWNER before SET_MEM_TABLE" not in text
    assert not report.ok()


def test_backend_channel_requests_and_the_front_ends_replies(image) -> None:
    script = Script(BlkDevice(image))
    pending = []

    @script.after("SET_FEATURES")
    def send_requests(ctx, msg, reply) -> None:
        pending.append(ctx.backend.config_change())
        pending.append(ctx.backend.iotlb_miss(0x1000))
        pending.append(ctx.backend.vring_call(0))

    fe = FakeFrontend(script)
    ours, theirs = socket.socketpair()
    fe.ask("GET_FEATURES")
    fe.ask("GET_PROTOCOL_FEATURES")
    fe.send("SET_PROTOCOL_FEATURES", {"features": script.protocol_features})
    fe.ask("SET_BACKEND_REQ_FD", fds=(theirs.fileno(),), need_reply=True)
    theirs.close()
    fe.send("SET_FEATURES", {"features": script.features})
    reader = wire.MessageReader(ours)
    got = [reader.read() for _ in range(3)]
    assert [f.request for f in got if f] == [2, 1, 4]
    assert all(f.flags == spec.VERSION | spec.FLAG_NEED_REPLY for f in got if f)
    wire.send_frame(
        ours,
        build(
            "CONFIG_CHANGE_MSG",
            {"value": 0},
            channel=spec.Channel.BACKEND,
            reply=True,
            layout="ack",
        ),
    )
    bad = build("IOTLB_MSG", {"value": 0}, channel=spec.Channel.BACKEND, reply=True, layout="ack")
    wire.send_frame(ours, bad.__class__(bad.request, 0x1, 8, bad.payload))  # flags wrong
    assert pending[0].wait(5) is not None and pending[0].reply.fields == {"value": 0}
    assert pending[1].wait(5) is not None
    assert any(f.code == "flags-reply" for f in pending[1].reply.findings)
    ours.close()
    assert pending[2].wait(5) is None  # the channel closed before a reply
    report = fe.close()
    assert any(f.code == "flags-reply" for f in report.violations)


def test_postcopy_memory_table_exchange(image) -> None:
    script = Script(BlkDevice(image)).postcopy()
    fe = FakeFrontend(script)
    _, chosen = fe.negotiate()
    assert chosen >> ProtocolFeature.PAGEFAULT & 1
    assert not chosen >> ProtocolFeature.CONFIGURE_MEM_SLOTS & 1
    fe.send("POSTCOPY_ADVISE")
    advise = fe.read()
    assert (advise.request, advise.size, len(advise.fds)) == (28, 0, 1)
    wire.close_fds(advise.fds)
    assert fe.ask("POSTCOPY_LISTEN", need_reply=True, layout="u64") == {"value": 0}
    region = {
        "guest_phys_addr": 0,
        "memory_size": GUEST_SIZE,
        "userspace_addr": UADDR,
        "mmap_offset": 0,
    }
    request = build("SET_MEM_TABLE", {"nregions": 1, "regions": [region]}, fds=(fe.mem_fd,))
    wire.send_frame(fe.sock, request)
    table = fe.read()
    assert (table.request, table.flags, table.size) == (5, spec.REPLY_FLAGS, request.size)
    nregions, _, gpa, size, client_base, _ = struct.unpack("<IIQQQQ", table.payload)
    assert (nregions, gpa, size) == (1, 0, GUEST_SIZE) and client_base not in (0, UADDR)
    fe.ram[0:4] = b"page"  # "arrived" in the shared memfd before registration
    wire.send_frame(fe.sock, build("SET_MEM_TABLE", {"value": 0}, layout="ack"))  # the ack
    fe.ask("GET_FEATURES")
    assert fe.ctx.memory.read(0, 4) == b"page"  # registered and readable
    assert fe.ask("POSTCOPY_END", need_reply=True, layout="u64") == {"value": 0}
    report = fe.close()
    assert report.errors == []
    assert not [f for f in report.violations if f.severity == "error"], report.violations


def test_mock_backend_serves_a_listening_socket(tmp_path, image) -> None:
    from mockbackend import MockBackend

    path = tmp_path / "mock.sock"
    backend = MockBackend(Script(BlkDevice(image))).start(path, sessions=2)
    assert os.stat(path).st_mode & 0o777 == 0o600
    for _ in range(2):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(path))
        wire.send_frame(sock, build("GET_FEATURES"))
        frame = wire.MessageReader(sock).read()
        assert frame is not None and frame.request == 1
        sock.close()
    reports = backend.wait(10)
    assert len(reports) == 2 and not threading.current_thread().daemon
