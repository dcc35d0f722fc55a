"""The pcapng writer and the exported-PDU header, against the formats' own definitions."""

from __future__ import annotations

import io
import struct

from scapy.utils import PcapNgReader

from vhtrace.dissect.pcapng import OUTBOUND, PcapNgWriter


def test_blocks_byte_for_byte() -> None:
    out = io.BytesIO()
    writer = PcapNgWriter(out, 252, application="x", if_name="a")
    writer.packet(b"abc", 0x1_0000_0002, original_length=5, comments=["hi"], direction=OUTBOUND)
    shb = (
        struct.pack("<II", 0x0A0D0D0A, 40)  # section header block, 40 bytes
        + struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)  # byte order, version 1.0, length unknown
        + struct.pack("<HH", 4, 1) + b"x\0\0\0"  # shb_userappl "x", padded to 32 bits
        + struct.pack("<HH", 0, 0)  # opt_endofopt
        + struct.pack("<I", 40)
    )  # fmt: skip
    idb = (
        struct.pack("<II", 1, 40)  # interface description block
        + struct.pack("<HHI", 252, 0, 0)  # link type, reserved, snaplen (0: none)
        + struct.pack("<HH", 2, 1) + b"a\0\0\0"  # if_name
        + struct.pack("<HH", 9, 1) + b"\x09\0\0\0"  # if_tsresol: 10^-9
        + struct.pack("<HH", 0, 0)
        + struct.pack("<I", 40)
    )  # fmt: skip
    epb = (
        struct.pack("<II", 6, 56)  # enhanced packet block
        + struct.pack("<IIIII", 0, 1, 2, 3, 5)  # interface 0, ts high/low, captured, original
        + b"abc\0"  # data, padded
        + struct.pack("<HH", 1, 2) + b"hi\0\0"  # opt_comment
        + struct.pack("<HHI", 2, 4, 2)  # epb_flags: outbound
        + struct.pack("<HH", 0, 0)
        + struct.pack("<I", 56)
    )  # fmt: skip
    assert out.getvalue() == shb + idb + epb


def test_scapy_reads_it_back() -> None:
    out = io.BytesIO()
    writer = PcapNgWriter(out, 147, application="vhtrace test", comments=["section"])
    stamp = 1_764_000_000_123_456_789
    writer.packet(b"\x01" * 13, stamp, comments=["one", "two"], direction=OUTBOUND)
    writer.packet(b"\x02" * 12, stamp + 1, original_length=100)
    out.seek(0)
    first, second = list(PcapNgReader(out))
    assert bytes(first) == b"\x01" * 13 and bytes(second) == b"\x02" * 12
    assert first.comments == [b"one", b"two"]
    assert first.direction == OUTBOUND
    assert int(first.time * 10**9) == stamp and int(second.time * 10**9) == stamp + 1
    assert second.wirelen == 100


def test_long_comments_are_cut_to_what_an_option_holds() -> None:
    out = io.BytesIO()
    PcapNgWriter(out, 147, application="x").packet(b"", 0, comments=["é" * 40000])
    out.seek(0)
    (packet,) = list(PcapNgReader(out))
    assert len(packet.comments[0]) <= 0xFFFF
    packet.comments[0].decode()  # still UTF-8: not cut inside a character
