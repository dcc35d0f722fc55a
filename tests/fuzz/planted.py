"""A small vhost-user back-end for the fuzzer's tests, with bugs planted on request.

    python -m tests.fuzz.planted --socket S [--crash-above N] [--hang-on-ring N] [--strict]
                                 [--crash-on-loop]

It serves one connection after another, forever. Every request goes through vhtrace's
:class:`~vhtrace.protocol.conversation.Conversation`, which says whether a reply is owed;
replies are the ones qemu-storage-daemon gave in ``traces/qemu-qsd-blk.vht`` (features,
queue count, memory slots), else what ``vhtrace.replay.answers`` makes up. Guest memory
is mapped only with ``--crash-on-loop``. The planted bugs:

* ``--crash-above N``: SIGSEGV on a SET_VRING_NUM whose ring size is above N;
* ``--hang-on-ring N``: no reply, ever, to a GET_VRING_BASE of ring N or above;
* ``--strict``: the correct behaviour: hang up on any request the conversation checks
  find an error in (a back-end that refuses bad input cleanly);
* ``--crash-on-loop``: guest memory mapped and rings followed; when a ring is kicked, the
  chains its avail ring names are walked, and one that loops (more descriptors than the
  ring holds) is followed into a SIGSEGV: a ring mutation's finding, which only guest
  memory and a kick make (no message).
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import select
import signal
import socket
import struct

from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Conversation, WireMessage
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import pack_header
from vhtrace.protocol.spec import Channel, DeviceType, Side
from vhtrace.protocol.virtio import DESC, DESC_F_NEXT
from vhtrace.replay.answers import RecordedReply, answer
from vhtrace.wire import MessageReader, close_fds, listen_unix, send_all

REPLIES = {
    "GET_FEATURES": struct.pack("<Q", 0x175007E46),
    "GET_PROTOCOL_FEATURES": struct.pack("<Q", 0x8F2B),
    "GET_QUEUE_NUM": struct.pack("<Q", 1),
    "GET_MAX_MEM_SLOTS": struct.pack("<Q", 32),
}


class Rings:
    """``--crash-on-loop``: guest memory mapped, rings followed, kicked chains walked."""

    def __init__(self) -> None:
        self.regions: list[tuple[dict, mmap.mmap]] = []
        self.num: dict[int, int] = {}
        self.addr: dict[int, tuple[int, int]] = {}
        self.kicks: dict[int, int] = {}
        """kick eventfd -> ring index."""
        self.last: dict[int, int] = {}

    def take(self, name: str, fields: dict, fds: list[int]) -> list[int]:
        """Keep what the request says about memory and rings; the fds not kept."""
        index = int(fields.get("index", 0))
        if name in ("ADD_MEM_REG", "SET_MEM_TABLE") and fds:
            for region, fd in zip(fields.get("regions", [fields]), fds, strict=False):
                size = int(region["mmap_offset"]) + int(region["memory_size"])
                with contextlib.suppress(OSError, ValueError):
                    self.regions.append((region, mmap.mmap(fd, size, mmap.MAP_SHARED)))
            return fds
        if name == "SET_VRING_NUM":
            self.num[index] = int(fields["num"])
        elif name == "SET_VRING_ADDR":
            self.addr[index] = (int(fields["desc_user_addr"]), int(fields["avail_user_addr"]))
        elif name == "SET_VRING_BASE":
            self.last[index] = int(fields["num"]) & 0xFFFF
        elif name == "SET_VRING_KICK" and fds:
            self.kicks[fds[0]] = index
            return fds[1:]
        return fds

    def read(self, addr: int, size: int, key: str = "userspace_addr") -> bytes | None:
        for region, mapped in self.regions:
            start = int(region[key])
            if start <= addr and addr + size <= start + int(region["memory_size"]):
                offset = int(region["mmap_offset"]) + addr - start
                return mapped[offset : offset + size]
        return None

    def kicked(self, fd: int) -> None:
        """Walk what the kicked ring's avail ring names; a looping chain: SIGSEGV."""
        with contextlib.suppress(OSError):
            os.eventfd_read(fd)
        index = self.kicks[fd]
        num = self.num.get(index, 0)
        if index not in self.addr or not num:
            return
        desc, avail = self.addr[index]
        head = self.read(avail + 2, 2)
        if head is None:
            return
        (idx,) = struct.unpack("<H", head)
        while self.last.get(index, 0) != idx:
            slot = self.read(avail + 4 + 2 * (self.last.get(index, 0) % num), 2)
            self.last[index] = (self.last.get(index, 0) + 1) & 0xFFFF
            if slot is None:
                return
            (d,) = struct.unpack("<H", slot)
            for _ in range(num + 1):
                entry = self.read(desc + DESC.size * d, DESC.size) if d < num else None
                if entry is None:
                    break
                _, _, flags, nxt = DESC.unpack(entry)
                if not flags & DESC_F_NEXT:
                    break
                d = nxt
            else:
                os.kill(os.getpid(), signal.SIGSEGV)  # the planted bug: followed the loop


def serve_connection(conn: socket.socket, args: argparse.Namespace) -> None:
    conversation = Conversation(DeviceType.BLK)
    reader = MessageReader(conn)
    rings = Rings() if args.crash_on_loop else None
    try:
        _serve(conn, reader, conversation, rings, args)
    finally:
        if rings is not None:
            close_fds(list(rings.kicks))


def _next_frame(conn: socket.socket, reader: MessageReader, rings: Rings | None):  # type: ignore[no-untyped-def]
    """The next request; meanwhile, with --crash-on-loop, the rings' kicks."""
    while rings is not None and rings.kicks:
        ready, _, _ = select.select([conn, *rings.kicks], [], [])
        for fd in ready:
            if fd in rings.kicks:
                rings.kicked(fd)
        if conn in ready:
            break
    return reader.read()


def _serve(conn, reader, conversation, rings, args) -> None:  # type: ignore[no-untyped-def]
    seq = 0
    while (frame := _next_frame(conn, reader, rings)) is not None:
        seq += 1
        wire = WireMessage(
            seq, Channel.MAIN, Side.FRONTEND, frame.request, frame.flags, frame.size,
            frame.payload, len(frame.fds), not frame.oversized,
        )  # fmt: skip
        analysis = conversation.analyse(wire)
        fields = analysis.fields or {}
        fds = list(frame.fds)
        if rings is not None and analysis.fields is not None:
            fds = rings.take(analysis.name, fields, fds)
        close_fds(fds)
        if args.strict and any(f.severity is Severity.ERROR for f in analysis.findings):
            return  # refuse: hang up
        crash = args.crash_above is not None and analysis.name == "SET_VRING_NUM"
        if crash and fields.get("num", 0) > args.crash_above:
            os.kill(os.getpid(), signal.SIGSEGV)
        pending = next((p for p in conversation.pending[Channel.MAIN] if p.seq == seq), None)
        if pending is None:
            continue
        hang = args.hang_on_ring is not None and analysis.name == "GET_VRING_BASE"
        if hang and fields.get("index", 0) >= args.hang_on_ring:
            continue  # the planted hang: the reply never goes out
        recorded = REPLIES.get(analysis.name)
        replies = [RecordedReply(0, recorded, ())] if recorded and pending.kind != "ack" else []
        reply = answer(pending, frame.payload, replies)
        raw = pack_header(frame.request, spec.REPLY_FLAGS, len(reply.payload)) + reply.payload
        try:
            send_all(conn, raw)
        except OSError:
            return
        seq += 1
        sent = WireMessage(
            seq, Channel.MAIN, Side.BACKEND, frame.request, spec.REPLY_FLAGS,
            len(reply.payload), reply.payload,
        )  # fmt: skip
        conversation.analyse(sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--crash-above", type=int)
    parser.add_argument("--hang-on-ring", type=int)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--crash-on-loop", action="store_true")
    args = parser.parse_args()
    listener = listen_unix(args.socket)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(ConnectionError):
            serve_connection(conn, args)


if __name__ == "__main__":
    main()
