"""Traces written for the trace tests: one record of every type, raw zstd frames."""

from __future__ import annotations

import msgpack
import zstandard

from vhtrace.protocol.findings import Finding, Severity
from vhtrace.trace import format as fmt
from vhtrace.trace.records import EventRecord, FindingRecord, MessageRecord, StreamRecord
from vhtrace.trace.writer import TraceWriter, make_header

HEADER_RAW = bytes.fromhex("010000000100000000000000")  # GET_FEATURES, V1, size 0

MEMFD = {"kind": "memfd", "name": "memory-backend-memfd", "size": 1 << 31, "seals": ("shrink",)}
"""(msgpack arrays read back as tuples)"""


def write_every_record_type(path) -> list:
    """One record of each kind (two messages), returning what should read back."""
    finding = Finding(2, "SET_MEM_TABLE", "fd-count", "carries 3 fds", Severity.ERROR)
    with TraceWriter(str(path), make_header(device="blk", endpoints={"frontend": "/s"})) as w:
        w.event(10, 20, 1, "session-start", {"frontend": {"pid": 42, "comm": "qemu"}})
        w.message(1, 11, 21, 1, "main", "frontend", HEADER_RAW)
        w.message(2, 12, 22, 1, "main", "frontend", b"\x05\x00", [MEMFD], fmt.MESSAGE_INCOMPLETE)
        w.finding(1, finding)
        w.stream(3, 13, 23, 1, "device-state", "backend", b"state bytes", [{"kind": "pipe"}])
        w.event(14, 24, 1, "session-end", {"reason": "eof"})
    return [
        EventRecord(10, 20, 1, "session-start", {"frontend": {"pid": 42, "comm": "qemu"}}),
        MessageRecord(1, 11, 21, 1, "main", "frontend", HEADER_RAW, (), 0),
        MessageRecord(2, 12, 22, 1, "main", "frontend", b"\x05\x00", (MEMFD,), 2),
        FindingRecord(1, finding),
        StreamRecord(3, 13, 23, 1, "device-state", "backend", b"state bytes", ({"kind": "pipe"},)),
        EventRecord(14, 24, 1, "session-end", {"reason": "eof"}),
    ]


def zstd_frame(obj: object) -> bytes:
    return zstandard.ZstdCompressor().compress(msgpack.packb(obj, use_bin_type=True))
