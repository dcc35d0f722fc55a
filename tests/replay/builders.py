"""Small recorded conversations for replay tests, built with the protocol model.

A conversation is a list of :class:`Msg`; :func:`analysed` runs it through the real
analysis (as a trace reader would), :func:`write_trace` writes it with the real
TraceWriter, so tests exercise replay on exactly what it meets in traces.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vhtrace.analysis import Analyser, Item
from vhtrace.protocol import spec
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, Side
from vhtrace.trace.records import EventRecord, MessageRecord
from vhtrace.trace.writer import TraceWriter, make_header

FEATURES = 1 << spec.VIRTIO_F_VERSION_1 | 1 << spec.VIRTIO_F_PROTOCOL_FEATURES | 1 << 9 | 1 << 6
PROTOCOL = (
    1 << spec.ProtocolFeature.REPLY_ACK
    | 1 << spec.ProtocolFeature.BACKEND_REQ
    | 1 << spec.ProtocolFeature.CONFIG
    | 1 << spec.ProtocolFeature.MQ
)
GAP_NS = 1000
START_NS = 1_000_000_000


@dataclass(frozen=True)
class Msg:
    channel: Channel
    sender: Side
    frame: Frame
    fds: tuple[dict[str, Any], ...] = ()
    gap_ns: int = GAP_NS
    """Recorded time since the previous message."""


def meta(kind: str, **extra: Any) -> dict[str, Any]:
    """fd metadata as the recorder writes it."""
    out: dict[str, Any] = {"kind": kind, "dev": "0:1", "ino": 1000 + len(extra)}
    out.update(extra)
    return out


def fe(
    name: str, fields: dict | None = None, *, need_reply: bool = False, fds: tuple[dict, ...] = ()
) -> Msg:
    """A front-end request on the main channel."""
    frame = build(name, fields, need_reply=need_reply, fds=tuple(range(len(fds))))
    return Msg(Channel.MAIN, Side.FRONTEND, frame, fds)


def be(
    name: str, fields: dict | None = None, *, layout: str | None = None, fds: tuple[dict, ...] = ()
) -> Msg:
    """The back-end's reply on the main channel."""
    frame = build(name, fields, reply=True, layout=layout)
    return Msg(Channel.MAIN, Side.BACKEND, frame, fds)


def be_request(name: str, fields: dict | None = None, *, need_reply: bool = False) -> Msg:
    """A back-end request on the back-end channel."""
    frame = build(name, fields, channel=Channel.BACKEND, need_reply=need_reply)
    return Msg(Channel.BACKEND, Side.BACKEND, frame)


def fe_reply(name: str, value: int = 0) -> Msg:
    """The front-end's ack on the back-end channel."""
    frame = build(name, {"value": value}, channel=Channel.BACKEND, reply=True, layout="ack")
    return Msg(Channel.BACKEND, Side.FRONTEND, frame)


def ack(name: str, value: int = 0) -> Msg:
    return be(name, {"value": value}, layout="ack")


def conversation(
    *, queues: int = 1, features: int = FEATURES, with_channel: bool = True, base: int = 7
) -> list[Msg]:
    """A short but complete session: negotiation, memory, a ring, a back-end-channel
    request, the ring stopped."""
    out = [
        fe("GET_FEATURES"),
        be("GET_FEATURES", {"features": features}),
        fe("GET_PROTOCOL_FEATURES"),
        be("GET_PROTOCOL_FEATURES", {"features": PROTOCOL}),
        fe("SET_PROTOCOL_FEATURES", {"features": PROTOCOL}),
        fe("GET_QUEUE_NUM"),
        be("GET_QUEUE_NUM", {"value": queues}),
    ]
    if with_channel:
        out += [
            fe("SET_BACKEND_REQ_FD", need_reply=True, fds=(meta("socket", interposed="backend"),)),
            ack("SET_BACKEND_REQ_FD"),
        ]
    out += [
        fe("SET_OWNER"),
        fe("SET_FEATURES", {"features": features}),
        fe(
            "ADD_MEM_REG",
            {
                "guest_phys_addr": 0,
                "memory_size": 1 << 20,
                "userspace_addr": 0x7F0000000000,
                "mmap_offset": 0,
            },
            need_reply=True,
            fds=(meta("memfd", size=1 << 20, name="guest-ram"),),
        ),
        ack("ADD_MEM_REG"),
        fe("SET_VRING_NUM", {"index": 0, "num": 256}),
        fe("SET_VRING_BASE", {"index": 0, "num": 0}),
        fe(
            "SET_VRING_ADDR",
            {
                "index": 0,
                "flags": 0,
                "desc_user_addr": 0x7F0000001000,
                "avail_user_addr": 0x7F0000002000,
                "used_user_addr": 0x7F0000003000,
                "log_guest_addr": 0x3000,
            },
        ),
        fe("SET_VRING_KICK", {"index": 0}, fds=(meta("eventfd"),)),
        fe("SET_VRING_CALL", {"index": 0}, fds=(meta("eventfd"),)),
        fe("SET_VRING_ENABLE", {"index": 0, "num": 1}, need_reply=True),
        ack("SET_VRING_ENABLE"),
    ]
    if with_channel:
        out += [be_request("CONFIG_CHANGE_MSG", need_reply=True), fe_reply("CONFIG_CHANGE_MSG")]
    out += [
        fe("SET_VRING_ENABLE", {"index": 0, "num": 0}, need_reply=True),
        ack("SET_VRING_ENABLE"),
        fe("GET_VRING_BASE", {"index": 0, "num": 0}),
        be("GET_VRING_BASE", {"index": 0, "num": base}),
    ]
    return out


def records(
    msgs: list[Msg], *, session: int = 1, first_seq: int = 1, start_ns: int = START_NS
) -> list[MessageRecord]:
    out, now = [], start_ns
    for seq, msg in enumerate(msgs, first_seq):
        now += msg.gap_ns
        frame = msg.frame
        out.append(
            MessageRecord(
                seq,
                now,
                now,
                session,
                msg.channel.value,
                msg.sender.value,
                frame.raw,
                tuple(msg.fds),
                0,
            )
        )
    return out


def analysed(
    msgs: list[Msg], *, end: str | None = "frontend closed", session: int = 1
) -> list[Item]:
    """The analysed items of one recorded session (what plan_sessions reads)."""
    recs: list[Any] = records(msgs, session=session)
    if end is not None:
        recs.append(EventRecord(recs[-1].mono_ns + 1, 0, session, "session-end", {"reason": end}))
    return list(Analyser().run(recs))


def write_trace(
    path: Path,
    sessions: list[list[Msg]],
    *,
    ends: list[str] | None = None,
    device: str | None = "blk",
    streams: dict[int, tuple[str, Side, bytes]] | None = None,
) -> Path:
    """A trace file of these sessions, one after the other. ``streams`` adds a stream
    record (channel, sender, data) after the message of that number."""
    header = make_header(device=device, endpoints={"frontend": "test", "backend": "test"})
    writer = TraceWriter(str(path), header)
    seq, now = 1, START_NS
    for number, msgs in enumerate(sessions, 1):
        writer.event(now, now, number, "session-start", {})
        for record in records(msgs, session=number, first_seq=seq, start_ns=now):
            writer.message(*record)
            seq, now = record.seq + 1, record.mono_ns
            if streams and record.seq in streams:
                channel, sender, data = streams[record.seq]
                writer.stream(100_000 + record.seq, now, now, number, channel, sender.value, data)
        reason = ends[number - 1] if ends else "frontend closed"
        writer.event(now + 1, now + 1, number, "session-end", {"reason": reason})
    writer.close({})
    return path


def with_reply(msgs: list[Msg], name: str, fields: dict, *, layout: str | None = None) -> list[Msg]:
    """The conversation with the back-end's (first) reply to ``name`` changed."""
    out = list(msgs)
    for i, msg in enumerate(out):
        is_reply = msg.sender is Side.BACKEND and msg.frame.flags & spec.FLAG_REPLY
        if is_reply and spec.request_name(msg.channel, msg.frame.request) == name:
            out[i] = replace(msg, frame=build(name, fields, reply=True, layout=layout))
            return out
    raise KeyError(name)
