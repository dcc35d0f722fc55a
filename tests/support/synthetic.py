"""Synthetic conversations built from the protocol model.

A QEMU-like vhost-user-blk session (the message flow QEMU 7.2 has with
qemu-storage-daemon, see docs) for benchmarks and unit tests that need many
well-formed messages without a VM. Acceptance tests use real traces instead. Repo-side
(tests and benchmarks), not in the installed package.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vhtrace.protocol import spec
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, Side
from vhtrace.trace.writer import TraceWriter, make_header

FEATURES = (
    1 << spec.VIRTIO_F_VERSION_1
    | 1 << spec.VIRTIO_F_PROTOCOL_FEATURES
    | 1 << spec.VIRTIO_F_INDIRECT_DESC
    | 1 << spec.VIRTIO_F_EVENT_IDX
    | 1 << 9  # blk FLUSH
    | 1 << 6  # blk BLK_SIZE
    | 1 << 2  # blk SEG_MAX
)
PROTOCOL_FEATURES = 0x922B  # MQ LOG_SHMFD REPLY_ACK BACKEND_REQ CONFIG INFLIGHT_SHMFD MEM_SLOTS
GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class SyntheticMessage:
    channel: Channel
    sender: Side
    frame: Frame
    fd_kinds: tuple[str, ...] = ()


def _fe(name: str, fields: dict | None = None, *, need_reply: bool = False,
        fds: tuple[str, ...] = ()) -> SyntheticMessage:  # fmt: skip
    frame = build(name, fields, need_reply=need_reply)
    return SyntheticMessage(Channel.MAIN, Side.FRONTEND, frame, fds)


def _be(name: str, fields: dict | None = None, *, layout: str | None = None,
        fds: tuple[str, ...] = ()) -> SyntheticMessage:  # fmt: skip
    frame = build(name, fields, reply=True, layout=layout)
    return SyntheticMessage(Channel.MAIN, Side.BACKEND, frame, fds)


def blk_session(queues: int = 1, queue_size: int = 256) -> list[SyntheticMessage]:
    """A whole vhost-user-blk session: negotiation, memory, rings, I/O start and stop."""
    base = 0x7F0000000000
    out = [
        _fe("GET_FEATURES"),
        _be("GET_FEATURES", {"features": FEATURES}),
        _fe("GET_PROTOCOL_FEATURES"),
        _be("GET_PROTOCOL_FEATURES", {"features": PROTOCOL_FEATURES}),
        _fe("SET_PROTOCOL_FEATURES", {"features": PROTOCOL_FEATURES}),
        _fe("GET_QUEUE_NUM"),
        _be("GET_QUEUE_NUM", {"value": queues}),
        _fe("GET_MAX_MEM_SLOTS"),
        _be("GET_MAX_MEM_SLOTS", {"value": 509}),
        _fe("SET_BACKEND_REQ_FD", need_reply=True, fds=("socket",)),
        _be("SET_BACKEND_REQ_FD", {"value": 0}),
        _fe("SET_OWNER"),
        _fe("GET_FEATURES"),
        _be("GET_FEATURES", {"features": FEATURES}),
        _fe("GET_CONFIG", {"offset": 0, "size": 60, "flags": 0, "region": bytes(60)}),
        _be("GET_CONFIG", {"offset": 0, "size": 60, "flags": 0,
                           "region": (1 << 17).to_bytes(8, "little") + bytes(52)}),
        _fe("SET_FEATURES", {"features": FEATURES}),
        _fe("ADD_MEM_REG", {"guest_phys_addr": 0, "memory_size": 2 * GIB,
                            "userspace_addr": base, "mmap_offset": 0},
            need_reply=True, fds=("memfd",)),
        _be("ADD_MEM_REG", {"value": 0}),
        _fe("ADD_MEM_REG", {"guest_phys_addr": 4 * GIB, "memory_size": GIB,
                            "userspace_addr": base + 2 * GIB, "mmap_offset": 2 * GIB},
            need_reply=True, fds=("memfd",)),
        _be("ADD_MEM_REG", {"value": 0}),
    ]  # fmt: skip
    for q in range(queues):
        ring = base + 0x100000 * (q + 1)
        out += [
            _fe("SET_VRING_CALL", {"index": q}, fds=("eventfd",)),
            _fe("SET_VRING_ERR", {"index": q}, fds=("eventfd",)),
            _fe("SET_VRING_NUM", {"index": q, "num": queue_size}, need_reply=True),
            _be("SET_VRING_NUM", {"value": 0}),
            _fe("SET_VRING_BASE", {"index": q, "num": 0}, need_reply=True),
            _be("SET_VRING_BASE", {"value": 0}),
            _fe("SET_VRING_ADDR", {"index": q, "flags": 0, "desc_user_addr": ring,
                                   "avail_user_addr": ring + 0x1000,
                                   "used_user_addr": ring + 0x2000, "log_guest_addr": 0},
                need_reply=True),
            _be("SET_VRING_ADDR", {"value": 0}),
            _fe("SET_VRING_KICK", {"index": q}, fds=("eventfd",)),
            _fe("SET_VRING_ENABLE", {"index": q, "num": 1}, need_reply=True),
            _be("SET_VRING_ENABLE", {"value": 0}),
        ]  # fmt: skip
    for q in range(queues):
        out += [
            _fe("SET_VRING_ENABLE", {"index": q, "num": 0}, need_reply=True),
            _be("SET_VRING_ENABLE", {"value": 0}),
            _fe("GET_VRING_BASE", {"index": q, "num": 0}),
            _be("GET_VRING_BASE", {"index": q, "num": 42 + q}),
        ]
    return out


def fd_meta(kind: str) -> dict[str, object]:
    """Plausible fd metadata of a kind, as the recorder writes it."""
    meta: dict[str, object] = {"kind": kind, "dev": "0:1", "ino": 1000}
    if kind == "memfd":
        meta.update(name="memory-backend-memfd", size=2 * GIB, seals=[])
    return meta


def messages(count: int) -> Iterator[tuple[int, SyntheticMessage]]:
    """``count`` messages of back-to-back sessions: (session number, message)."""
    session = blk_session()
    produced, number = 0, 0
    while produced < count:
        number += 1
        for message in session:
            if produced >= count:
                return
            produced += 1
            yield number, message


def write_synthetic_trace(
    path: Path,
    count: int,
    *,
    close: bool = True,
    flush_every: int = 0,
    device: str | None = "blk",
) -> Path:
    """``count`` messages of back-to-back vhost-user-blk sessions (:func:`messages`),
    each session opened and closed by its events, 1 us apart, fd metadata included.

    ``flush_every``: end a zstd frame every that many messages (0: only at the end).
    ``close=False`` leaves the trace as a killed writer would after its last flush."""
    header = make_header(device=device, endpoints={"frontend": "qemu", "backend": "qsd"})
    mono, wall = header["mono_ns"], header["wall_ns"]
    writer = TraceWriter(str(path), header)
    session = 0
    for seq, (number, message) in enumerate(messages(count), 1):
        if number != session:
            if session:
                writer.event(mono + seq * 1000, wall + seq * 1000, session, "session-end", {})
            session = number
            writer.event(mono + seq * 1000, wall + seq * 1000, session, "session-start", {})
        writer.message(
            seq,
            mono + seq * 1000,
            wall + seq * 1000,
            session,
            message.channel.value,
            message.sender.value,
            message.frame.raw,
            [fd_meta(kind) for kind in message.fd_kinds],
        )
        if flush_every and seq % flush_every == 0:
            writer.flush()
    if close:
        end = mono + (count + 1) * 1000
        writer.event(end, wall + (count + 1) * 1000, session, "session-end", {"reason": "eof"})
        writer.close({"messages": count})
    else:
        writer.flush()
    return path
