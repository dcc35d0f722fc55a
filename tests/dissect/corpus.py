"""Synthetic traces for the dissection tests, built from the protocol model.

``blk`` is the QEMU <-> qemu-storage-daemon session of :mod:`tests.support.synthetic`.
``every_layout`` is made to reach every payload layout of both channels, the
replies whose layout differs from the table's (postcopy memory tables, the
front-end's postcopy ack), the contexts that change layouts (XEN_MMAP regions,
packed rings) and malformed messages (extra bytes, short payloads, an unknown
id, reserved flags, an oversized and a cut-short message, a cut header).
Each message keeps a ``tag`` so tests can find it without dissecting it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.synthetic import blk_session, fd_meta
from vhtrace.protocol import payloads, spec
from vhtrace.protocol.messages import build
from vhtrace.protocol.payloads import PayloadContext
from vhtrace.protocol.spec import Channel, ProtocolFeature, Side
from vhtrace.trace import format as fmt
from vhtrace.trace.writer import TraceWriter, make_header

WALL_BASE = 1_764_000_000_000_000_000
GIB = 1 << 30
BASE = 0x7F0000000000


@dataclass(frozen=True)
class Msg:
    session: int
    channel: Channel
    sender: Side
    raw: bytes
    fds: tuple[str, ...] = ()
    flags: int = 0
    tag: str = ""
    fields: dict[str, Any] = field(default_factory=dict, compare=False)


def write_trace(path: Path, messages: Iterable[Msg], device: str | None = "blk") -> Path:
    """A trace file of these messages, 1 µs apart, sessions opened and closed."""
    messages = list(messages)
    header = make_header(device=device) if device else make_header()
    with TraceWriter(str(path), header) as writer:
        sessions = sorted({m.session for m in messages})
        for session in sessions:
            writer.event(0, WALL_BASE, session, "session-start", {})
        for seq, msg in enumerate(messages, start=1):
            writer.message(
                seq,
                seq * 1000,
                WALL_BASE + seq * 1000,
                msg.session,
                msg.channel.value,
                msg.sender.value,
                msg.raw,
                tuple(fd_meta(kind) for kind in msg.fds),
                msg.flags,
            )
            writer.flush()  # a frame per message, as a recorder flushing often: cuts lose little
        for session in sessions:
            writer.event(10**9, WALL_BASE + 10**9, session, "session-end", {})
    return path


def blk(queues: int = 2) -> list[Msg]:
    out = []
    for m in blk_session(queues=queues):
        tag = spec.request_name(m.channel, m.frame.request)
        out.append(Msg(1, m.channel, m.sender, m.frame.raw, m.fd_kinds, tag=tag))
    return out


def _pf(*names: str) -> int:
    return sum(1 << ProtocolFeature[name] for name in names)


PROTOCOL = _pf(
    "MQ", "LOG_SHMFD", "RARP", "REPLY_ACK", "NET_MTU", "BACKEND_REQ", "CROSS_ENDIAN",
    "CRYPTO_SESSION", "PAGEFAULT", "CONFIG", "BACKEND_SEND_FD", "HOST_NOTIFIER",
    "INFLIGHT_SHMFD", "RESET_DEVICE", "INBAND_NOTIFICATIONS", "CONFIGURE_MEM_SLOTS",
    "STATUS", "SHARED_OBJECT", "DEVICE_STATE", "SHMEM", "GET_VRING_BASE_INFLIGHT",
    "GET_VRING_BASE_SKIP_DRAIN",
)  # fmt: skip
FEATURES = (
    1 << spec.VIRTIO_F_VERSION_1
    | 1 << spec.VIRTIO_F_PROTOCOL_FEATURES
    | 1 << spec.VIRTIO_F_ACCESS_PLATFORM
    | 1 << 9
)
REGIONS = [
    {"guest_phys_addr": 0, "memory_size": 2 * GIB, "userspace_addr": BASE, "mmap_offset": 0},
    {"guest_phys_addr": 4 * GIB, "memory_size": GIB, "userspace_addr": BASE + 2 * GIB,
     "mmap_offset": 2 * GIB},
]  # fmt: skip
UUID = str(uuid.UUID("12345678-9abc-def0-1234-56789abcdef0"))


class Script:
    """Builds a session's messages with the protocol model's encoder."""

    def __init__(self, session: int, ctx: PayloadContext = payloads.DEFAULT_CONTEXT) -> None:
        self.session, self.ctx, self.messages = session, ctx, []

    def _add(self, channel: Channel, sender: Side, name: str, fields: dict | None,
             fds: tuple[str, ...], tag: str, **kw: Any) -> None:  # fmt: skip
        frame = build(name, fields, channel=channel, ctx=self.ctx, **kw)
        self.messages.append(
            Msg(self.session, channel, sender, frame.raw, fds, tag=tag or name,
                fields=dict(fields or {}))
        )  # fmt: skip

    def fe(self, name: str, fields: dict | None = None, *, fds: tuple[str, ...] = (),
           tag: str = "", **kw: Any) -> None:  # fmt: skip
        """A front-end request (or the postcopy ack) on the main socket."""
        self._add(Channel.MAIN, Side.FRONTEND, name, fields, fds, tag, **kw)

    def be(self, name: str, fields: dict | None = None, *, fds: tuple[str, ...] = (),
           tag: str = "", **kw: Any) -> None:  # fmt: skip
        """The back-end's reply on the main socket."""
        self._add(Channel.MAIN, Side.BACKEND, name, fields, fds, tag or name + " reply",
                  reply=True, **kw)  # fmt: skip

    def bc(self, name: str, fields: dict | None = None, *, fds: tuple[str, ...] = (),
           tag: str = "", **kw: Any) -> None:  # fmt: skip
        """A back-end request on the back-end channel."""
        self._add(Channel.BACKEND, Side.BACKEND, name, fields, fds, tag, **kw)

    def fc(self, name: str, fields: dict | None = None, *, tag: str = "", **kw: Any) -> None:
        """The front-end's reply on the back-end channel."""
        self._add(Channel.BACKEND, Side.FRONTEND, name, fields, (), tag or name + " reply",
                  reply=True, **kw)  # fmt: skip

    def raw(self, raw: bytes, tag: str, *, flags: int = 0, channel: Channel = Channel.MAIN,
            sender: Side = Side.FRONTEND) -> None:  # fmt: skip
        self.messages.append(Msg(self.session, channel, sender, raw, flags=flags, tag=tag))


def _negotiate(s: Script, protocol: int, features: int) -> None:
    s.fe("GET_FEATURES")
    s.be("GET_FEATURES", {"features": features})
    s.fe("GET_PROTOCOL_FEATURES")
    s.be("GET_PROTOCOL_FEATURES", {"features": protocol})
    s.fe("SET_PROTOCOL_FEATURES", {"features": protocol})
    s.fe("SET_OWNER")
    s.fe("SET_FEATURES", {"features": features})


def _header(request: int, flags: int, size: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in (request, flags, size))


def every_layout() -> list[Msg]:
    s = Script(1)
    _negotiate(s, PROTOCOL, FEATURES)
    s.fe("GET_QUEUE_NUM")
    s.be("GET_QUEUE_NUM", {"value": 1})
    s.fe("GET_MAX_MEM_SLOTS")
    s.be("GET_MAX_MEM_SLOTS", {"value": 509})
    s.fe("NET_SET_MTU", {"value": 1500}, need_reply=True)
    s.be("NET_SET_MTU", {"value": 0})
    s.fe("SET_BACKEND_REQ_FD", fds=("socket",), need_reply=True)
    s.be("SET_BACKEND_REQ_FD", {"value": 0})
    s.fe("SET_MEM_TABLE", {"regions": REGIONS}, fds=("memfd", "memfd"), need_reply=True)
    s.be("SET_MEM_TABLE", {"value": 0}, layout="ack")
    s.fe("SET_LOG_BASE", {"mmap_size": 0x2000, "mmap_offset": 0}, fds=("memfd",))
    s.be("SET_LOG_BASE", {"value": 0})
    s.fe("SET_LOG_FD", fds=("eventfd",))
    s.fe("SET_VRING_NUM", {"index": 0, "num": 256})
    s.fe("SET_VRING_BASE", {"index": 0, "num": 0})
    s.fe("SET_VRING_ADDR", {"index": 0, "flags": spec.VRING_F_LOG, "desc_user_addr": BASE + 0x1000,
                            "used_user_addr": BASE + 0x3000, "avail_user_addr": BASE + 0x2000,
                            "log_guest_addr": 0x3000})  # fmt: skip
    s.fe("SET_VRING_KICK", {"index": 0}, fds=("eventfd",))
    s.fe("SET_VRING_CALL", {"index": 0, "nofd": True})
    s.fe("SET_VRING_ERR", {"index": 0}, fds=("eventfd",))
    s.fe("SET_VRING_ENDIAN", {"index": 0, "num": 0})
    s.fe("SET_VRING_ENABLE", {"index": 0, "num": 1})
    s.fe("SEND_RARP", {"mac": "52:54:00:12:34:56"})
    s.fe("IOTLB_MSG", {"iova": 0x1000, "size": 0x1000, "uaddr": BASE + 0x1000, "perm": 3,
                       "type": 2})  # fmt: skip
    s.be("IOTLB_MSG", {"value": 0})
    s.fe("GET_CONFIG", {"offset": 0, "size": 16, "flags": 0, "region": bytes(16)})
    s.be("GET_CONFIG", {"offset": 0, "size": 16, "flags": 0, "region": bytes(range(1, 17))})
    s.fe("SET_CONFIG", {"offset": 4, "size": 4, "flags": 1, "region": b"\x01\x02\x03\x04"})
    s.fe("CREATE_CRYPTO_SESSION", {"op_code": 0, "cipher_alg": 3, "key_len": 16,
                                   "key": bytes(range(16)), "session_id": 0})  # fmt: skip
    s.be("CREATE_CRYPTO_SESSION", {"layout": "qemu-old", "op_code": 0, "cipher_alg": 3,
                                   "key_len": 16, "session_id": 7})  # fmt: skip
    s.fe("CREATE_CRYPTO_SESSION", {"layout": "qemu", "op_code": 1, "algo": 1, "keytype": 2,
                                   "keylen": 32, "session_id": 0},
         tag="CREATE_CRYPTO_SESSION asym")  # fmt: skip
    s.be("CREATE_CRYPTO_SESSION", {"layout": "unknown", "raw": b"\xff" * 8},
         tag="CREATE_CRYPTO_SESSION odd size")  # fmt: skip
    s.fe("CLOSE_CRYPTO_SESSION", {"value": 7})
    s.fe("GET_INFLIGHT_FD", {"mmap_size": 0, "mmap_offset": 0, "num_queues": 1,
                             "queue_size": 256})  # fmt: skip
    s.be("GET_INFLIGHT_FD", {"mmap_size": 0x2140, "mmap_offset": 0, "num_queues": 1,
                             "queue_size": 256}, fds=("memfd",))  # fmt: skip
    s.fe("SET_INFLIGHT_FD", {"mmap_size": 0x2140, "mmap_offset": 0, "num_queues": 1,
                             "queue_size": 256}, fds=("memfd",))  # fmt: skip
    s.fe("GPU_SET_SOCKET", fds=("socket",))
    s.fe("VRING_KICK", {"index": 0, "num": 0})
    s.fe("SET_STATUS", {"status": 0xF})
    s.fe("GET_STATUS")
    s.be("GET_STATUS", {"status": 0xF})
    s.fe("GET_SHARED_OBJECT", {"uuid": UUID})
    s.be("GET_SHARED_OBJECT", {"value": 0}, fds=("dmabuf",))
    s.fe("SET_DEVICE_STATE_FD", {"direction": 0, "phase": 0}, fds=("pipe",))
    s.be("SET_DEVICE_STATE_FD", {"error": 0, "nofd": True})
    s.fe("CHECK_DEVICE_STATE")
    s.be("CHECK_DEVICE_STATE", {"value": 0})
    s.fe("GET_SHMEM_CONFIG")
    s.be("GET_SHMEM_CONFIG", {"nregions": 1, "memory_sizes": [0x100000]})
    s.fe("ADD_MEM_REG", {**REGIONS[1], "guest_phys_addr": 8 * GIB}, fds=("memfd",),
         need_reply=True)  # fmt: skip
    s.be("ADD_MEM_REG", {"value": 0}, layout="ack")
    s.fe("REM_MEM_REG", {**REGIONS[1], "guest_phys_addr": 8 * GIB})
    # The back-end channel.
    s.bc("IOTLB_MSG", {"iova": 0x5000, "size": 0x1000, "uaddr": 0, "perm": 1, "type": 1})
    s.bc("CONFIG_CHANGE_MSG", need_reply=True)
    s.fc("CONFIG_CHANGE_MSG", {"value": 0})
    s.bc("VRING_HOST_NOTIFIER_MSG", {"index": 0, "size": 0x1000, "offset": 0},
         fds=("vfio",))  # fmt: skip
    s.bc("VRING_CALL", {"index": 0, "num": 0})
    s.bc("VRING_ERR", {"index": 0, "num": 0})
    s.bc("SHARED_OBJECT_ADD", {"uuid": UUID})
    s.bc("SHARED_OBJECT_LOOKUP", {"uuid": UUID})
    s.fc("SHARED_OBJECT_LOOKUP", {"value": 0})
    s.bc("SHARED_OBJECT_REMOVE", {"uuid": UUID})
    s.bc("SHMEM_MAP", {"shmid": 0, "fd_offset": 0, "shm_offset": 0x1000, "len": 0x1000,
                       "flags": 1}, fds=("memfd",))  # fmt: skip
    s.bc("SHMEM_UNMAP", {"shmid": 0, "shm_offset": 0x1000, "len": 0x1000})
    # Postcopy: the reply's layout is not the table's.
    s.fe("POSTCOPY_ADVISE")
    s.be("POSTCOPY_ADVISE", fds=("userfaultfd",))
    s.fe("POSTCOPY_LISTEN", need_reply=True)
    s.be("POSTCOPY_LISTEN", {"value": 0}, layout="ack")
    s.fe("SET_MEM_TABLE", {"regions": REGIONS}, fds=("memfd", "memfd"),
         tag="SET_MEM_TABLE postcopy")  # fmt: skip
    backend_regions = [{**r, "userspace_addr": 0x7E0000000000 + i * 4 * GIB}
                       for i, r in enumerate(REGIONS)]  # fmt: skip
    s.be("SET_MEM_TABLE", {"regions": backend_regions}, layout="mem_table",
         tag="SET_MEM_TABLE postcopy reply")  # fmt: skip
    s.fe("SET_MEM_TABLE", {"value": 0}, layout="ack", tag="SET_MEM_TABLE postcopy ack")
    s.fe("POSTCOPY_END", need_reply=True)
    s.be("POSTCOPY_END", {"value": 0}, layout="ack")
    s.fe("GET_VRING_BASE", {"index": 0, "num": 0})
    s.be("GET_VRING_BASE", {"index": 0, "num": 42})
    s.fe("GET_VRING_BASE_SKIP_DRAIN", {"index": 0, "num": 0})
    s.be("GET_VRING_BASE_SKIP_DRAIN", {"index": 0, "num": 42})
    s.fe("RESET_DEVICE")
    s.fe("RESET_OWNER")
    # Malformed, on purpose.
    vring_num = build("SET_VRING_NUM", {"index": 1, "num": 128}).payload
    s.raw(_header(8, 1, 12) + vring_num + b"\xaa\xbb\xcc\xdd", "extra bytes")
    s.raw(_header(9, 1, 8) + bytes(8), "short payload")
    s.raw(_header(99, 1, 4) + b"\x01\x02\x03\x04", "unknown request")
    s.raw(_header(1, 0x1 | 0x40, 0), "reserved flags")
    s.raw(_header(5, 1, 0xFFFF) + bytes(64), "oversized", flags=fmt.MESSAGE_OVERSIZED)
    s.raw(_header(10, 1, 8) + b"\x01\x00", "cut short", flags=fmt.MESSAGE_INCOMPLETE)
    s.raw(b"\x08\x00\x00\x00\x01", "cut header", flags=fmt.MESSAGE_INCOMPLETE)
    return s.messages + xen_session(2) + packed_session(3)


def xen_session(session: int) -> list[Msg]:
    """XEN_MMAP negotiated: memory regions grow to 40 bytes."""
    s = Script(session, PayloadContext(xen_mmap=True))
    _negotiate(s, _pf("REPLY_ACK", "XEN_MMAP", "CONFIGURE_MEM_SLOTS"), FEATURES)
    xen = [{**r, "xen_mmap_flags": 0x101, "domid": 7} for r in REGIONS]
    s.fe("SET_MEM_TABLE", {"regions": xen}, fds=("memfd", "memfd"), tag="SET_MEM_TABLE xen")
    s.fe("ADD_MEM_REG", {**xen[1], "guest_phys_addr": 8 * GIB}, fds=("memfd",),
         tag="ADD_MEM_REG xen")  # fmt: skip
    return s.messages


def packed_session(session: int) -> list[Msg]:
    """A packed ring: vring bases hold two indexes and wrap counters."""
    s = Script(session, PayloadContext(packed=True))
    _negotiate(s, _pf("REPLY_ACK"), FEATURES | 1 << spec.VIRTIO_F_RING_PACKED)
    base = {"index": 0, "last_avail_idx": 5, "avail_wrap": 1, "used_idx": 3, "used_wrap": 0}
    s.fe("SET_VRING_BASE", base, tag="SET_VRING_BASE packed")
    s.fe("GET_VRING_BASE", {"index": 0, "num": 0})
    s.be("GET_VRING_BASE", {**base, "used_idx": 5, "used_wrap": 1},
         tag="GET_VRING_BASE packed reply")  # fmt: skip
    return s.messages
