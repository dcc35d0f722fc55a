"""The records of a trace: what a message record shows of its raw bytes."""

from __future__ import annotations

from tests.trace.written import HEADER_RAW
from vhtrace.trace import format as fmt
from vhtrace.trace.records import MessageRecord


def test_message_record_views_of_the_raw_bytes() -> None:
    whole = MessageRecord(1, 0, 0, 1, "main", "frontend", HEADER_RAW, ())
    assert whole.header == (1, 1, 0)
    assert (whole.payload, whole.complete) == (b"", True)
    assert (whole.channel_enum, whole.sender_enum) == ("main", "frontend")
    cut_header = whole._replace(raw=HEADER_RAW[:5])
    assert (cut_header.header, cut_header.complete) == ((0, 0, 0), False)
    short = whole._replace(raw=bytes.fromhex("050000000100000028000000") + bytes(8))
    assert short.complete is False  # 8 of 40 payload bytes
    flagged = whole._replace(flags=fmt.MESSAGE_OVERSIZED)
    assert flagged.complete is False
