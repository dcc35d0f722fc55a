"""The virtio-net loopback: a frame sent on the transmit queue comes back on the receive one."""

from __future__ import annotations

import struct

from mockbackend.devices.net import BACKLOG, HEADER, RX, TX, NetLoopback
from mockbackend.virtqueue import Buffer, Chain
from tests.mockbackend.test_virtqueue import FakeMemory

TX_AT, RX_AT = 0x1000, 0x4000


def transmit(mem: FakeMemory, frame: bytes) -> Chain:
    """A transmit chain: the 12-byte header in one buffer, the frame in another."""
    mem.write(TX_AT, bytes(HEADER))
    mem.write(TX_AT + 0x100, frame)
    chain = Chain(0)
    chain.add(Buffer(TX_AT, HEADER), writable=False)
    chain.add(Buffer(TX_AT + 0x100, len(frame)), writable=False)
    return chain


def receive_buffer(size: int = 2048) -> Chain:
    chain = Chain(1)
    chain.add(Buffer(RX_AT, size), writable=True)
    return chain


def test_one_queue_pair_and_the_receive_queue_waits_for_a_frame() -> None:
    net = NetLoopback()
    assert (net.num_queues, net.reported_queues) == (2, 1)
    assert net.ready(TX) and not net.ready(RX)


def test_a_sent_frame_is_delivered_after_a_header_with_one_buffer() -> None:
    net, mem = NetLoopback(), FakeMemory()
    woken: list[int] = []
    net.attach(woken.append)
    frame = b"\xff" * 6 + b"\x52\x54\x00\x12\x34\x56" + b"\x08\x00" + b"payload" * 10
    assert net.handle(TX, transmit(mem, frame), mem) == 0  # nothing written into a tx chain
    assert woken == [RX] and net.ready(RX) and net.sent == 1
    written = net.handle(RX, receive_buffer(), mem)
    assert written == HEADER + len(frame)
    header = struct.unpack("<BBHHHHH", mem.read(RX_AT, HEADER))
    assert header == (0, 0, 0, 0, 0, 0, 1)
    assert mem.read(RX_AT + HEADER, len(frame)) == frame
    assert net.delivered == 1 and not net.ready(RX)


def test_a_chain_with_only_a_header_sends_nothing() -> None:
    net, mem = NetLoopback(), FakeMemory()
    chain = Chain(0)
    chain.add(Buffer(TX_AT, HEADER), writable=False)
    assert net.handle(TX, chain, mem) == 0
    assert net.sent == 0 and not net.ready(RX)
    assert net.handle(RX, receive_buffer(), mem) == 0  # nothing to deliver


def test_the_backlog_keeps_the_newest_frames() -> None:
    net, mem = NetLoopback(), FakeMemory()
    for n in range(BACKLOG + 3):
        net.handle(TX, transmit(mem, n.to_bytes(4, "little") * 4), mem)
    assert len(net.backlog) == BACKLOG
    net.handle(RX, receive_buffer(), mem)
    assert mem.read(RX_AT + HEADER, 4) == (3).to_bytes(4, "little")  # 0, 1, 2 dropped
