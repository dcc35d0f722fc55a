"""A small vhost-user back-end for the fuzzer's tests, with bugs planted on request.

    python -m tests.fuzz.planted --socket S [--crash-above N] [--hang-on-ring N] [--strict]

It serves one connection after another, forever. Every request goes through vhtrace's
:class:`~vhtrace.protocol.conversation.Conversation`, which says whether a reply is owed;
replies are the ones qemu-storage-daemon gave in ``traces/qemu-qsd-blk.vht`` (features,
queue count, memory slots), else what ``vhtrace.replay.answers`` makes up. Guest memory
is never mapped. The planted bugs:

* ``--crash-above N``: SIGSEGV on a SET_VRING_NUM whose ring size is above N;
* ``--hang-on-ring N``: no reply, ever, to a GET_VRING_BASE of ring N or above;
* ``--strict``: the correct behaviour: hang up on any request the conversation checks
  find an error in (a back-end that refuses bad input cleanly).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import struct

from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Conversation, WireMessage
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import pack_header
from vhtrace.protocol.spec import Channel, DeviceType, Side
from vhtrace.replay.answers import RecordedReply, answer
from vhtrace.wire import MessageReader, close_fds, listen_unix, send_all

REPLIES = {
    "GET_FEATURES": struct.pack("<Q", 0x175007E46),
    "GET_PROTOCOL_FEATURES": struct.pack("<Q", 0x8F2B),
    "GET_QUEUE_NUM": struct.pack("<Q", 1),
    "GET_MAX_MEM_SLOTS": struct.pack("<Q", 32),
}


def serve_connection(conn: socket.socket, args: argparse.Namespace) -> None:
    conversation = Conversation(DeviceType.BLK)
    reader = MessageReader(conn)
    seq = 0
    while (frame := reader.read()) is not None:
        close_fds(frame.fds)
        seq += 1
        wire = WireMessage(
            seq, Channel.MAIN, Side.FRONTEND, frame.request, frame.flags, frame.size,
            frame.payload, len(frame.fds), not frame.oversized,
        )  # fmt: skip
        analysis = conversation.analyse(wire)
        fields = analysis.fields or {}
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
    args = parser.parse_args()
    listener = listen_unix(args.socket)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(ConnectionError):
            serve_connection(conn, args)


if __name__ == "__main__":
    main()
