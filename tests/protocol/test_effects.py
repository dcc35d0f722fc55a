"""What a message changed, as the analysis says it: one test per kind of effect."""

from __future__ import annotations

import struct

from vhtrace.protocol import spec
from vhtrace.protocol.connection import Connection, Received
from vhtrace.protocol.effects import (
    AreaPassed,
    ChannelOpened,
    DeviceReset,
    MemoryReplaced,
    RegionAdded,
    RegionRemoved,
    RingEnabled,
    RingStarted,
    RingStopped,
)
from vhtrace.protocol.framing import pack_header
from vhtrace.protocol.spec import Channel, Side

REGION = {"guest_phys_addr": 0, "memory_size": 1 << 20, "userspace_addr": 0x7F00_0000_0000,
          "mmap_offset": 0}  # fmt: skip
PROTOCOL = 1 << spec.ProtocolFeature.CONFIGURE_MEM_SLOTS | 1 << spec.ProtocolFeature.BACKEND_REQ


def _effects(conn: Connection, name: str, fields: dict | None = None, fds: int = 0) -> tuple:
    _, analysis = conn.send(name, fields, fds=tuple(range(100, 100 + fds)))
    return analysis.effects


def _reply(conn: Connection, request: int, payload: bytes, fds: tuple[int, ...] = ()) -> tuple:
    raw = pack_header(request, spec.REPLY_FLAGS, len(payload)) + payload
    [received] = conn.receive_data(raw, fds)
    assert isinstance(received, Received)
    return received.analysis.effects


def _negotiated() -> Connection:
    conn = Connection(Side.FRONTEND)
    conn.send("GET_PROTOCOL_FEATURES")
    _reply(conn, 16, struct.pack("<Q", PROTOCOL))
    conn.send("SET_PROTOCOL_FEATURES", {"features": PROTOCOL})
    return conn


def test_memory_replaced_added_removed() -> None:
    conn = _negotiated()
    [replaced] = _effects(conn, "SET_MEM_TABLE", {"nregions": 1, "regions": [REGION]}, fds=1)
    assert isinstance(replaced, MemoryReplaced)
    assert [(r.guest_phys_addr, r.memory_size) for r in replaced.regions] == [(0, 1 << 20)]
    second = {**REGION, "guest_phys_addr": 1 << 20}
    [added] = _effects(conn, "ADD_MEM_REG", second, fds=1)
    assert isinstance(added, RegionAdded) and added.fd == 0
    assert added.region.guest_phys_addr == 1 << 20
    [without] = _effects(conn, "ADD_MEM_REG", {**REGION, "guest_phys_addr": 2 << 20})
    assert isinstance(without, RegionAdded) and without.fd is None  # came with no fd
    [removed] = _effects(conn, "REM_MEM_REG", second)
    assert isinstance(removed, RegionRemoved) and removed.region.guest_phys_addr == 1 << 20
    assert [r.guest_phys_addr for r in conn.state.regions] == [0, 2 << 20]


def test_areas_passed_with_their_fd_only() -> None:
    conn = _negotiated()
    log = {"mmap_size": 4096, "mmap_offset": 0}
    assert _effects(conn, "SET_LOG_BASE", log, fds=1) == (AreaPassed("log"),)
    assert _effects(conn, "SET_LOG_BASE", log) == ()
    inflight = {"mmap_size": 4096, "mmap_offset": 0, "num_queues": 1, "queue_size": 128}
    assert _effects(conn, "SET_INFLIGHT_FD", inflight, fds=1) == (AreaPassed("inflight"),)
    conn.send("GET_INFLIGHT_FD", {**inflight, "mmap_size": 0})
    reply = struct.pack("<QQHH4x", 4096, 0, 1, 128)  # mmap_size, mmap_offset, queues, size
    assert _reply(conn, 31, reply, fds=(7,)) == (AreaPassed("inflight"),)


def test_rings_started_enabled_stopped_and_reset() -> None:
    conn = _negotiated()
    assert _effects(conn, "SET_VRING_KICK", {"index": 0, "nofd": False}, fds=1) == (RingStarted(0),)
    assert _effects(conn, "SET_VRING_ENABLE", {"index": 0, "num": 1}) == (RingEnabled(0, True),)
    assert _effects(conn, "SET_VRING_ENABLE", {"index": 0, "num": 0}) == (RingEnabled(0, False),)
    conn.send("GET_VRING_BASE", {"index": 0, "num": 0})
    assert _reply(conn, 11, struct.pack("<II", 0, 42)) == (RingStopped(0, 42),)
    assert _effects(conn, "RESET_OWNER") == (DeviceReset(),)
    assert not conn.state.rings[0].started


def test_a_channel_opened_by_its_fd() -> None:
    conn = _negotiated()
    assert _effects(conn, "SET_BACKEND_REQ_FD", fds=1) == (ChannelOpened(Channel.BACKEND),)
    assert _effects(conn, "SET_BACKEND_REQ_FD") == ()  # no fd: nothing opened


def test_requests_that_change_nothing_say_nothing() -> None:
    conn = _negotiated()
    assert _effects(conn, "GET_FEATURES") == ()
    assert _effects(conn, "SET_VRING_NUM", {"index": 0, "num": 256}) == ()
