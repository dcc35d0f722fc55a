"""The exported-PDU header Wireshark finds the dissector by: its TLVs, byte for byte."""

from __future__ import annotations

import struct

from vhtrace.dissect import exported_pdu


def test_exported_pdu_header() -> None:
    assert exported_pdu.header(direction=exported_pdu.P2P_DIR_RECV) == (
        struct.pack(">HH", 12, 12) + b"vhost-user\0\0"  # dissector name, NUL-padded
        + struct.pack(">HHi", 35, 4, 1)  # P2P direction: received
        + struct.pack(">HH", 0, 0)  # end of options
    )  # fmt: skip


def test_without_a_direction_there_is_no_direction_tag() -> None:
    assert exported_pdu.header() == struct.pack(">HH", 12, 12) + b"vhost-user\0\0" + bytes(4)


def test_names_are_padded_to_four_bytes() -> None:
    assert exported_pdu.tlv(12, b"ab") == b"\x00\x0c\x00\x02ab"
    assert exported_pdu.header("abcd").startswith(struct.pack(">HH", 12, 4) + b"abcd")
    assert exported_pdu.header("abcde").startswith(struct.pack(">HH", 12, 8) + b"abcde\0\0\0")
