"""``vhtrace export``: what lands in the pcapng, read back by scapy's reader."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from scapy.utils import PcapNgReader

from tests.dissect import corpus
from vhtrace.cli.main import main
from vhtrace.dissect import exported_pdu
from vhtrace.dissect.export import LinkType
from vhtrace.dissect.meta import parse_meta_line
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.messages import build
from vhtrace.trace import format as fmt
from vhtrace.trace.writer import TraceWriter, make_header


def linktype_of(path: Path) -> int:
    data = path.read_bytes()
    (shb_length,) = struct.unpack_from("<I", data, 4)
    return struct.unpack_from("<H", data, shb_length + 8)[0]


def test_one_packet_per_message(synthetic_dir: Path, exported: Callable[..., Path]) -> None:
    messages = corpus.every_layout()
    path = exported(synthetic_dir / "every_layout.vht")
    packets = list(PcapNgReader(str(path)))
    assert linktype_of(path) == exported_pdu.LINKTYPE_WIRESHARK_UPPER_PDU
    assert len(packets) == len(messages)
    for seq, (packet, msg) in enumerate(zip(packets, messages, strict=True), start=1):
        direction = 0 if msg.sender.value == "frontend" else 1
        assert bytes(packet) == exported_pdu.header(direction=direction) + msg.raw
        assert packet.direction == (2 if direction == 0 else 1)
        assert int(packet.time * 10**9) == corpus.WALL_BASE + seq * 1000
        meta = parse_meta_line(packet.comments[0].decode())
        assert meta is not None
        assert (meta["seq"], meta["session"]) == (str(seq), str(msg.session))
        assert (meta["channel"], meta["sender"]) == (msg.channel.value, msg.sender.value)
        fd_lines = [c for c in packet.comments if c.startswith(b"fd ")]
        assert [line.split()[2].decode() for line in fd_lines] == list(msg.fds)


def test_user_link_type_carries_the_bare_message(
    synthetic_dir: Path, exported: Callable[..., Path]
) -> None:
    path = exported(synthetic_dir / "blk.vht", LinkType.USER)
    assert linktype_of(path) == exported_pdu.LINKTYPE_USER0
    assert [bytes(p) for p in PcapNgReader(str(path))] == [m.raw for m in corpus.blk()]


def test_layouts_and_contexts_in_the_metadata(
    synthetic_dir: Path, exported: Callable[..., Path]
) -> None:
    packets = list(PcapNgReader(str(exported(synthetic_dir / "every_layout.vht"))))
    tags = [m.tag for m in corpus.every_layout()]

    def meta(tag: str) -> dict[str, str]:
        result = parse_meta_line(packets[tags.index(tag)].comments[0].decode())
        assert result is not None
        return result

    assert meta("SET_MEM_TABLE postcopy reply")["layout"] == "mem_table"
    assert meta("SET_MEM_TABLE postcopy ack")["role"] == "postcopy-ack"
    assert meta("SET_MEM_TABLE xen")["ctx"] == "xen_mmap"
    assert meta("GET_VRING_BASE packed reply")["ctx"] == "packed"
    assert meta("cut short")["cut"] == "incomplete"
    assert "layout" not in meta("unknown request")


def test_cut_messages_keep_their_true_length(
    synthetic_dir: Path, exported: Callable[..., Path]
) -> None:
    packets = list(PcapNgReader(str(exported(synthetic_dir / "every_layout.vht"))))
    tags = [m.tag for m in corpus.every_layout()]
    prefix = len(exported_pdu.header(direction=0))
    oversized = packets[tags.index("oversized")]
    assert oversized.wirelen == prefix + 12 + 0xFFFF
    assert packets[tags.index("cut short")].wirelen == prefix + 12 + 8


def test_findings_known_late_reach_their_message(
    synthetic_dir: Path, exported: Callable[..., Path]
) -> None:
    packets = list(PcapNgReader(str(exported(synthetic_dir / "every_layout.vht"))))
    tags = [m.tag for m in corpus.every_layout()]
    comments = packets[tags.index("reserved flags")].comments
    assert any(c.startswith(b"error: ") and b"no reply" in c for c in comments)
    assert any(c.startswith(b"error: ") and b"flags 0x41" in c for c in comments)


def _trace_with_a_connection_finding(path: Path) -> Path:
    frame = build("GET_FEATURES")
    with TraceWriter(str(path), make_header()) as writer:
        writer.message(1, 0, 10, 1, "main", "frontend", frame.raw)
        writer.finding(1, Finding(None, "", "transport", "peer vanished"))
    return path


def test_findings_about_no_message_go_in_the_section(tmp_path: Path) -> None:
    trace = _trace_with_a_connection_finding(tmp_path / "t.vht")
    out = tmp_path / "t.pcapng"
    assert main(["export", str(trace), "-o", str(out)]) == 0
    data = out.read_bytes()
    (shb_length,) = struct.unpack_from("<I", data, 4)
    assert b"session 1: error: peer vanished" in data[:shb_length]


def test_incomplete_flag_survives(tmp_path: Path) -> None:
    trace = tmp_path / "t.vht"
    raw = build("SET_VRING_NUM", {"index": 0, "num": 8}).raw
    with TraceWriter(str(trace), make_header()) as writer:
        writer.message(1, 0, 10, 1, "main", "frontend", raw[:14], (), fmt.MESSAGE_INCOMPLETE)
    out = tmp_path / "t.pcapng"
    assert main(["export", str(trace), "-o", str(out), "--linktype", "user"]) == 0
    (packet,) = list(PcapNgReader(str(out)))
    assert bytes(packet) == raw[:14] and packet.wirelen == len(raw)
