"""Traces as scapy packet lists: every message of every trace, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.packet import Raw, raw
from scapy.utils import PcapNgReader, wrpcapng

from tests.dissect import corpus
from vhtrace.analysis import AnalysedMessage, Analyser
from vhtrace.dissect.lua import STRUCT_KEYS
from vhtrace.dissect.meta import parse_meta_line
from vhtrace.protocol import payloads
from vhtrace.protocol.spec import Channel
from vhtrace.scapy import (
    VhostUserBackend,
    VhostUserMemTable,
    VhostUserPayload,
    VhostUserVringBasePacked,
    read_trace,
    register_user_dlt,
    scapy_name,
)
from vhtrace.trace.reader import TraceError, TraceReader
from vhtrace.trace.records import MessageRecord


def records(path: Path) -> list[MessageRecord]:
    with TraceReader(path) as reader:
        return [r for r in reader if isinstance(r, MessageRecord)]


def test_every_message_round_trips(any_trace: Path) -> None:
    messages = records(any_trace)
    packets = read_trace(any_trace)
    assert len(packets) == len(messages)
    for packet, record in zip(packets, messages, strict=True):
        assert raw(packet) == record.raw, packet.summary()
        assert packet.seq == record.seq
        assert packet.time == pytest.approx(record.wall_ns / 1e9)


def test_decoded_fields_agree_with_the_codec(any_trace: Path) -> None:
    """Every fixed-struct payload reads the same in scapy as in vhtrace's codec."""
    with TraceReader(any_trace) as reader:
        analysed = [i for i in Analyser().run(reader) if isinstance(i, AnalysedMessage)]
    checked = 0
    for packet, item in zip(read_trace(any_trace), analysed, strict=True):
        layout, fields = item.analysis.layout, item.analysis.fields
        if layout not in STRUCT_KEYS or fields is None:
            continue
        payload = packet.payload
        assert isinstance(payload, VhostUserPayload) and payload.layout == layout
        if payload.variant:  # packed rings: other fields, checked in test_scapy_layers
            continue
        for name in payloads.LAYOUTS[layout].field_names:
            actual, expected = getattr(payload, scapy_name(name)), fields[name]
            assert (actual if isinstance(expected, bytes) else int(actual)) == expected, name
        checked += 1
    assert checked


def test_packets_know_their_place(synthetic_dir: Path) -> None:
    messages = corpus.every_layout()
    packets = read_trace(synthetic_dir / "every_layout.vht")
    for packet, msg in zip(packets, messages, strict=True):
        assert packet.session == msg.session
        assert packet.channel is msg.channel
        assert packet.sender == msg.sender.value
        assert [fd["kind"] for fd in packet.fds] == list(msg.fds)
        assert packet.direction == (2 if msg.sender.value == "frontend" else 1)
        meta = parse_meta_line(packet.comments[0].decode())
        assert meta is not None and int(meta["seq"]) == packet.seq
    backend = [p for p in packets if p.channel is Channel.BACKEND]
    assert backend and all(isinstance(p, VhostUserBackend) for p in backend)
    assert len(backend) == sum(m.channel is Channel.BACKEND for m in messages)


def test_replies_read_as_what_they_answer(synthetic_dir: Path) -> None:
    messages = corpus.every_layout()
    packets = read_trace(synthetic_dir / "every_layout.vht")
    by_tag = {m.tag: p for m, p in zip(messages, packets, strict=True)}
    reply = by_tag["SET_MEM_TABLE postcopy reply"]
    assert reply[VhostUserMemTable].regions[1].userspace_addr == 0x7E0000000000 + 4 * corpus.GIB
    assert reply.record.answers == by_tag["SET_MEM_TABLE postcopy"].seq
    ack = by_tag["SET_MEM_TABLE postcopy ack"]
    assert ack.record.role == "postcopy-ack" and ack.value == 0
    packed = by_tag["GET_VRING_BASE packed reply"][VhostUserVringBasePacked]
    assert (packed.used_idx, packed.used_wrap) == (5, 1)


def test_late_findings_join_their_message(synthetic_dir: Path) -> None:
    """A request that never gets its reply is only known to be so at the end."""
    messages = corpus.every_layout()
    packets = read_trace(synthetic_dir / "every_layout.vht")
    unanswered = packets[[m.tag for m in messages].index("reserved flags")]
    assert any("no reply" in text for text in unanswered.findings)
    assert any(b"no reply" in line for line in unanswered.comments)


def test_sessions_are_connections(synthetic_dir: Path) -> None:
    packets = read_trace(synthetic_dir / "every_layout.vht")
    sessions = packets.sessions()
    counts = {}
    for msg in corpus.every_layout():
        counts[f"vhost-user session {msg.session}"] = (
            counts.get(f"vhost-user session {msg.session}", 0) + 1
        )
    assert {key: len(value) for key, value in sessions.items()} == counts


def test_filters_and_request_reply_pairs(synthetic_dir: Path) -> None:
    packets = read_trace(synthetic_dir / "blk.vht")
    memory = packets.filter(lambda p: p.request == 37 and not p.flags.REPLY)
    assert [p.guest_phys_addr for p in memory] == [0, 4 * corpus.GIB]
    answered, _ = packets.sr()
    for request, reply in answered:
        assert reply.record.answers == request.seq
    requests_with_replies = {r.record.answers for r in packets if r.record.answers}
    assert {request.seq for request, _ in answered} == requests_with_replies


def test_summary_uses_the_codec(synthetic_dir: Path) -> None:
    packets = read_trace(synthetic_dir / "blk.vht")
    lines = [p.summary() for p in packets]
    assert lines[0] == "vhost-user #1 FE>BE GET_FEATURES"
    ring = packets.filter(lambda p: p.request == 8)[0]
    assert ring.summary().endswith(payloads.decode("vring_state", raw(ring.payload)).summary())
    assert all(not isinstance(p.payload, Raw) for p in packets)


def test_not_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "junk.vht"
    path.write_bytes(b"not a trace")
    with pytest.raises(TraceError):
        read_trace(path)


def test_cut_short_trace_says_why(synthetic_dir: Path, tmp_path: Path) -> None:
    data = (synthetic_dir / "blk.vht").read_bytes()
    cut = tmp_path / "cut.vht"
    cut.write_bytes(data[: len(data) - 20])
    packets = read_trace(cut)
    assert packets.problem is not None


def test_scapy_writes_the_same_comments(synthetic_dir: Path, tmp_path: Path) -> None:
    """wrpcapng of read_trace gives a USER DLT capture our Lua reads (see test_lua)."""
    register_user_dlt()
    packets = read_trace(synthetic_dir / "every_layout.vht")
    out = tmp_path / "scapy.pcapng"
    wrpcapng(str(out), packets)
    read_back = list(PcapNgReader(str(out)))
    assert [bytes(p) for p in read_back] == [raw(p) for p in packets]
    assert [p.comments for p in read_back] == [p.comments for p in packets]


def test_copies_keep_the_record(synthetic_dir: Path) -> None:
    packets = read_trace(synthetic_dir / "blk.vht")
    first = packets[0]
    assert first.copy().seq == first.seq == 1
    assert [p.seq for p in first] == [1]  # iterating a packet clones it
    shown = packets.filter(lambda p: p.seq <= 3)
    assert [p.seq for p in shown] == [1, 2, 3]
