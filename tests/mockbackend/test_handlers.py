"""The 20 rows of bad-inputs.md, sent by a fake front-end: the mock reports, survives,
allocates nothing unbounded and closes every fd it was given.

Each test ends with GET_FEATURES answered (the connection still works) and, at the end of
the module's fixture, no fd left open that the session received.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

import pytest

from mockbackend import BlkDevice, Script
from mockbackend.testing import GUEST_SIZE, UADDR, Driver, FakeFrontend
from vhtrace import wire
from vhtrace.protocol import spec
from vhtrace.protocol.framing import Frame, pack_header
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import ProtocolFeature


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def devnull() -> int:
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


@pytest.fixture
def fe(tmp_path) -> Iterator[FakeFrontend]:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    device = BlkDevice(image)
    before = open_fds()
    frontend = FakeFrontend(Script(device))
    frontend.negotiate()
    yield frontend
    if frontend.thread.is_alive():
        frontend.close()
    leaked = open_fds() - before
    device.close()
    assert not leaked, f"fds left open: {sorted(leaked)}"


def codes(fe: FakeFrontend) -> set[str]:
    return {f.code for f in fe.ctx.report.violations}


def alive(fe: FakeFrontend) -> None:
    assert fe.ask("GET_FEATURES")["features"] >> spec.VIRTIO_F_PROTOCOL_FEATURES & 1


def region(**overrides: int) -> dict:
    base = {
        "guest_phys_addr": 0,
        "memory_size": GUEST_SIZE,
        "userspace_addr": UADDR,
        "mmap_offset": 0,
    }
    return {**base, **overrides}


def test_01_extra_fds_on_get_features_in_a_loop_are_closed(fe: FakeFrontend) -> None:
    for _ in range(40):
        fds = tuple(devnull() for _ in range(8))
        fe.ask("GET_FEATURES", fds=fds)
        wire.close_fds(fds)
    assert "fd-count" in codes(fe)


def test_02_repeated_set_vring_num_allocates_nothing(fe: FakeFrontend) -> None:
    for _ in range(200):
        fe.send("SET_VRING_NUM", {"index": 0, "num": 256})
    alive(fe)
    assert len(fe.ctx.rings) == 1
    assert "ring-repeat" in codes(fe)


def test_03_log_base_wrapping_u64_is_refused(fe: FakeFrontend) -> None:
    fd = devnull()
    reply = fe.ask(
        "SET_LOG_BASE",
        {"mmap_size": 0xFFFFFFFFFFFFF000, "mmap_offset": 0x2000},
        fds=(fd,),
        layout="log_reply",
    )
    os.close(fd)
    assert reply == {"value": 1}
    assert fe.ctx.memory.log is None
    assert "log-overflow" in codes(fe)


def test_04_ring_index_with_high_bits_is_refused(fe: FakeFrontend) -> None:
    assert fe.ask("SET_VRING_NUM", {"index": 0x10000, "num": 256}, need_reply=True) == {"value": 1}
    assert "ring-index" in codes(fe)
    alive(fe)


def test_05_crypto_session_with_oversized_keys_is_reported(fe: FakeFrontend) -> None:
    fields = {"layout": "qemu", "op_code": 0, "key_len": 1000, "auth_key_len": 5000}
    fe.send("CREATE_CRYPTO_SESSION", fields)
    reply = fe.read()
    assert reply.flags == spec.REPLY_FLAGS
    assert {"crypto-key", "not-negotiated"} <= codes(fe)
    alive(fe)


def test_06_repeated_get_inflight_fd_keeps_one_area(fe: FakeFrontend) -> None:
    for _ in range(20):
        fe.send("GET_INFLIGHT_FD", {"num_queues": 1, "queue_size": 128})
        reply = fe.read()
        assert len(reply.fds) == 1
        wire.close_fds(reply.fds)
    assert fe.ctx.inflight is not None
    assert "inflight-repeat" in codes(fe)


def test_07_set_inflight_fd_with_too_many_queues_is_refused(fe: FakeFrontend) -> None:
    fe.ask("GET_QUEUE_NUM")
    fd = os.memfd_create("inflight", os.MFD_CLOEXEC)
    os.ftruncate(fd, 1 << 20)
    fields = {"mmap_size": 1 << 20, "mmap_offset": 0, "num_queues": 0x101, "queue_size": 128}
    assert fe.ask("SET_INFLIGHT_FD", fields, fds=(fd,), need_reply=True) == {"value": 1}
    os.close(fd)
    assert fe.ctx.inflight is None
    assert "inflight-queues" in codes(fe)


def test_08_inflight_messages_with_extra_fds_in_a_loop(fe: FakeFrontend) -> None:
    for _ in range(20):
        fds = tuple(devnull() for _ in range(4))
        fe.send("GET_INFLIGHT_FD", {"num_queues": 1, "queue_size": 128}, fds=fds)
        wire.close_fds(fe.read().fds)
        wire.close_fds(fds)
    assert "fd-count" in codes(fe)


def test_09_ring_crossing_the_end_of_its_region_never_starts(fe: FakeFrontend) -> None:
    fe.set_mem_table()
    driver = Driver(fe.ram, size=256, desc=GUEST_SIZE - 0x100)  # table runs past the end
    kick, call = fe.start_ring(0, driver)
    assert "ring-address" in codes(fe)
    assert fe.ctx.rings[0].broken and "in no region" in fe.ctx.rings[0].broken
    wire.close_fds([kick, call])
    alive(fe)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        (
            {
                "nregions": 9,
                "regions": [
                    region(guest_phys_addr=i << 30, userspace_addr=i << 40) for i in range(9)
                ],
            },
            "region-count",
        ),
        (
            {"nregions": 1, "regions": [region(mmap_offset=1 << 63, memory_size=1 << 63)]},
            "region-overflow",
        ),
    ],
    ids=["nine-regions", "size-plus-offset-overflows"],
)
def test_10_bad_memory_tables_are_refused(fe: FakeFrontend, fields: dict, code: str) -> None:
    fds = tuple(os.dup(fe.mem_fd) for _ in fields["regions"])
    assert fe.ask("SET_MEM_TABLE", fields, fds=fds, need_reply=True) == {"value": 1}
    wire.close_fds(fds)
    assert fe.ctx.memory.regions == []
    assert code in codes(fe)


def test_10_ring_size_not_a_power_of_two_is_refused(fe: FakeFrontend) -> None:
    assert fe.ask("SET_VRING_NUM", {"index": 0, "num": 3}, need_reply=True) == {"value": 1}
    assert "ring-size" in codes(fe)


def test_11_region_size_near_2_64_is_refused(fe: FakeFrontend) -> None:
    fields = {"nregions": 1, "regions": [region(memory_size=(1 << 64) - 0x1000)]}
    fd = os.dup(fe.mem_fd)
    assert fe.ask("SET_MEM_TABLE", fields, fds=(fd,), need_reply=True) == {"value": 1}
    os.close(fd)
    assert fe.ctx.memory.regions == []


def test_12_oversized_payload_with_fds_is_skipped_without_storing_it(fe: FakeFrontend) -> None:
    fds = tuple(devnull() for _ in range(3))
    size = 1 << 20
    wire.send_all(fe.sock, pack_header(1, spec.VERSION, size), fds)
    wire.send_all(fe.sock, bytes(size))
    wire.close_fds(fds)
    reply = fe.read()  # the oversized GET_FEATURES still gets its reply
    assert reply.request == 1
    alive(fe)
    assert "size-limit" in codes(fe)


def test_12_short_header_with_fds_then_close(fe: FakeFrontend) -> None:
    fds = (devnull(), devnull())
    wire.send_all(fe.sock, b"\x01\x00\x00", fds)
    wire.close_fds(fds)
    report = fe.close()
    assert any(f.code == "truncated" for f in report.violations)


def test_13_valid_mem_table_with_two_regions_is_accepted(fe: FakeFrontend) -> None:
    half = GUEST_SIZE // 2
    regions = [
        region(memory_size=half),
        region(
            guest_phys_addr=half, userspace_addr=UADDR + half, mmap_offset=half, memory_size=half
        ),
    ]
    fds = (os.dup(fe.mem_fd), os.dup(fe.mem_fd))
    assert fe.ask(
        "SET_MEM_TABLE", {"nregions": 2, "regions": regions}, fds=fds, need_reply=True
    ) == {"value": 0}
    wire.close_fds(fds)
    assert len(fe.ctx.memory.regions) == 2


def test_14_call_and_kick_with_nofd_are_accepted(fe: FakeFrontend) -> None:
    assert fe.ask("SET_VRING_CALL", {"index": 0, "nofd": True}, need_reply=True) == {"value": 0}
    assert fe.ask("SET_VRING_ERR", {"index": 0, "nofd": True}, need_reply=True) == {"value": 0}
    assert "fd-count" not in codes(fe)


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("SET_VRING_NUM", {"index": 5, "num": 128}),
        (
            "SET_VRING_ADDR",
            {
                "index": 5,
                "flags": 0,
                "desc_user_addr": UADDR,
                "used_user_addr": UADDR,
                "avail_user_addr": UADDR,
                "log_guest_addr": 0,
            },
        ),
        ("SET_VRING_ENABLE", {"index": 5, "num": 1}),
    ],
)
def test_15_ring_index_beyond_the_queues_is_refused(
    fe: FakeFrontend, name: str, fields: dict
) -> None:
    fe.ask("GET_QUEUE_NUM")
    assert fe.ask(name, fields, need_reply=True) == {"value": 1}
    assert "ring-index" in codes(fe)


def test_15_mem_table_with_fewer_fds_than_regions_is_refused(fe: FakeFrontend) -> None:
    regions = [region(), region(guest_phys_addr=1 << 32, userspace_addr=UADDR << 1)]
    fd = os.dup(fe.mem_fd)
    assert fe.ask(
        "SET_MEM_TABLE", {"nregions": 2, "regions": regions}, fds=(fd,), need_reply=True
    ) == {"value": 1}
    os.close(fd)
    assert "fd-count" in codes(fe)


def test_16_inflight_area_with_hostile_last_batch_head(fe: FakeFrontend) -> None:
    fe.set_mem_table()
    fe.send("GET_INFLIGHT_FD", {"num_queues": 1, "queue_size": 16})
    reply = fe.read()
    [fd] = reply.fds
    size = struct.unpack_from("<Q", reply.payload)[0]
    area = bytearray(size)
    struct.pack_into("<QHHHH", area, 0, 0, 1, 16, 0xFFFF, 9)  # version 1, batch head 0xFFFF
    os.pwrite(fd, bytes(area), 0)
    fields = {"mmap_size": size, "mmap_offset": 0, "num_queues": 1, "queue_size": 16}
    assert fe.ask("SET_INFLIGHT_FD", fields, fds=(fd,), need_reply=True) == {"value": 0}
    os.close(fd)
    kick, call = fe.start_ring(0, Driver(fe.ram))
    wire.close_fds([kick, call])
    alive(fe)
    assert fe.ctx.rings[0].broken is None


def test_17_set_vring_base_beyond_the_queues_is_refused(fe: FakeFrontend) -> None:
    assert fe.ask("SET_VRING_BASE", {"index": 9, "next_avail": 0}, need_reply=True) == {"value": 1}


def test_18_unknown_request_id(fe: FakeFrontend) -> None:
    fe.send_frame(Frame.build(0xFFFFFFFF, spec.VERSION | spec.FLAG_NEED_REPLY, b"\0" * 8))
    reply = fe.read()
    assert reply.request == 0xFFFFFFFF and reply.payload == struct.pack("<Q", 1)
    assert "unknown-request" in codes(fe)
    alive(fe)


def test_19_protocol_bit_not_offered_is_reported(fe: FakeFrontend) -> None:
    fe.send("SET_PROTOCOL_FEATURES", {"features": 1 << ProtocolFeature.GPA_ADDRESSES})
    alive(fe)
    assert "features" in codes(fe)


def test_20_coalesced_requests_keep_fds_on_their_own_message(fe: FakeFrontend) -> None:
    region_fields = {"nregions": 1, "regions": [region()]}
    fd = os.dup(fe.mem_fd)
    frames = [
        build("SET_PROTOCOL_FEATURES", {"features": fe.ctx.script.protocol_features}),
        build("SET_OWNER"),
        build("SET_MEM_TABLE", region_fields, need_reply=True, fds=(fd,)),
    ]
    for frame in frames:  # back to back, no waiting: the reader must not read ahead
        wire.send_frame(fe.sock, frame)
    os.close(fd)
    assert fe.read().payload == struct.pack("<Q", 0)
    assert len(fe.ctx.memory.regions) == 1
    assert "fd-count" not in codes(fe)


def test_backend_channel_socket_is_closed_with_the_session(fe: FakeFrontend) -> None:
    ours, theirs = socket.socketpair()
    fe.ask("SET_BACKEND_REQ_FD", fds=(theirs.fileno(),), need_reply=True)
    theirs.close()
    fe.close()
    assert ours.recv(1) == b""  # the mock closed its end
    ours.close()


def test_a_region_mapped_for_postcopy_is_not_touched_before_its_ack(fe: FakeFrontend) -> None:
    """Found by vhtrace fuzz (traces/fuzz/mockbackend-postcopy-segv.vht): a ring set up in
    a postcopy region the front-end had not acked yet made the mock read its PROT_NONE
    mapping, and the Python process died of SIGSEGV."""
    fe.ask("POSTCOPY_ADVISE")
    assert fe.ask("POSTCOPY_LISTEN", need_reply=True) == {"value": 0}
    reply = fe.ask("ADD_MEM_REG", region(), fds=(fe.mem_fd,), layout="mem_region")
    assert reply["guest_phys_addr"] == 0  # answered as postcopy; we never ack it
    kick, call = fe.start_ring(0, Driver(fe.ram, size=256, desc=0x1000))
    os.eventfd_write(kick, 1)
    alive(fe)
    assert fe.ctx.rings[0].broken and "not acked" in fe.ctx.rings[0].broken
    wire.close_fds([kick, call])


def test_postcopy_listen_without_advise_is_refused(fe: FakeFrontend) -> None:
    assert fe.ask("POSTCOPY_LISTEN", need_reply=True) == {"value": 1}
    assert not fe.ctx.postcopy_listening
    assert any("no POSTCOPY_ADVISE" in error for error in fe.ctx.report.errors)


def test_an_undecodable_request_still_gets_the_reply_it_is_owed(fe: FakeFrontend) -> None:
    """Found by vhtrace fuzz (traces/fuzz/mockbackend-log-base-hang.vht): SET_LOG_BASE with
    LOG_SHMFD negotiated is owed a reply; with a payload too short to read it got none, and
    the front-end waited forever."""
    short = Frame.build(spec.lookup_request("SET_LOG_BASE")[1], spec.VERSION, bytes(8))
    fe.send_frame(short)
    answer = fe.read()
    assert (answer.request, answer.flags, answer.payload) == (short.request, spec.REPLY_FLAGS,
                                                              bytes(8))  # fmt: skip
    alive(fe)
