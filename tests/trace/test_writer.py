"""Trace format v1: every record type round trips; what is not a trace is refused."""

from __future__ import annotations

import io
import os
import stat
import sys

import msgpack
import pytest
import zstandard

from vhtrace import __version__
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceError, TraceReader, read_trace
from vhtrace.trace.records import (
    EndRecord,
    EventRecord,
    FindingRecord,
    MessageRecord,
    StreamRecord,
)
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


def test_every_record_type_round_trips(tmp_path) -> None:
    path = tmp_path / "all.vht"
    expected = write_every_record_type(path)
    with TraceReader(path) as reader:
        records = list(reader)
    assert records[:-1] == expected
    end = records[-1]
    assert isinstance(end, EndRecord) and end.summary == {}
    assert reader.end == end
    assert reader.problem is None
    assert reader.records == len(expected) + 1


def test_the_header_names_the_format_and_keeps_what_the_caller_adds(tmp_path) -> None:
    path = tmp_path / "h.vht"
    write_every_record_type(path)
    header = TraceReader(path).header
    assert header["format"] == "vhtrace"
    assert header["version"] == fmt.FORMAT_VERSION
    assert fmt.FORMAT_VERSION in fmt.READABLE_VERSIONS
    assert header["needs"] == fmt.NEEDS_TOOL_VERSION[fmt.FORMAT_VERSION]
    assert header["byteorder"] == sys.byteorder
    assert header["tool"] == f"vhtrace {__version__}"
    assert (header["device"], header["endpoints"]) == ("blk", {"frontend": "/s"})


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


def test_summary_of_the_end_record_and_read_trace(tmp_path) -> None:
    path = tmp_path / "s.vht"
    with TraceWriter(str(path)) as writer:
        writer.message(1, 0, 0, 1, "main", "frontend", HEADER_RAW)
        writer.close({"messages": 1, "sessions": 1})
    header, records, problem = read_trace(path)
    assert header["format"] == "vhtrace"
    assert records[-1].summary == {"messages": 1, "sessions": 1}
    assert problem is None


def test_a_trace_reads_from_a_file_object_too(tmp_path) -> None:
    path = tmp_path / "f.vht"
    expected = write_every_record_type(path)
    reader = TraceReader(io.BytesIO(path.read_bytes()))
    assert list(reader)[:-1] == expected


def test_the_file_is_created_0600_whatever_the_umask(tmp_path) -> None:
    path = tmp_path / "private.vht"
    old = os.umask(0)
    try:
        TraceWriter(str(path)).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_file_is_made_private_when_overwritten(tmp_path) -> None:
    path = tmp_path / "old.vht"
    path.write_bytes(b"old contents")
    path.chmod(0o644)
    TraceWriter(str(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes()[:4] == fmt.MAGIC


def test_records_are_written_in_zstd_frames_with_checksums(tmp_path) -> None:
    path = tmp_path / "c.vht"
    write_every_record_type(path)
    params = zstandard.get_frame_parameters(path.read_bytes())
    assert params.has_checksum


def test_unknown_record_tags_of_the_same_version_are_skipped(tmp_path) -> None:
    path = tmp_path / "future.vht"
    compressor = zstandard.ZstdCompressor()
    pack = msgpack.Packer(use_bin_type=True).pack
    body = b"".join(
        [
            pack(make_header()),
            pack(("m", 1, 0, 0, 1, "main", "frontend", HEADER_RAW, (), 0)),
            pack(("~", "a record kind from a later writer of the same version", {"n": 1})),
            # a message with one more field at the end: the known ones still read
            pack(("m", 2, 0, 0, 1, "main", "backend", HEADER_RAW, (), 0, "extra")),
            pack(("e", 0, 0, {})),
        ]
    )
    path.write_bytes(compressor.compress(body))
    reader = TraceReader(path)
    records = list(reader)
    assert [type(r).__name__ for r in records] == ["MessageRecord", "MessageRecord", "EndRecord"]
    assert records[1].sender == "backend"
    assert reader.problem is None


# --------------------------------------------------------------------------
# Not a trace (bad input, exit 2 in the CLI)
# --------------------------------------------------------------------------


def _zstd(obj: object) -> bytes:
    return zstandard.ZstdCompressor().compress(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "does not start with a zstd frame"),
        (b"hello, this is a text file\n", "does not start with a zstd frame"),
        (bytes(range(256)) * 4, "does not start with a zstd frame"),
        (fmt.MAGIC + b"\x00garbage after the magic", "not a vhtrace trace"),
        (_zstd({"format": "pcapng", "version": 1}), "no vhtrace header"),
        (_zstd([1, 2, 3]), "no vhtrace header"),
        (zstandard.ZstdCompressor().compress(b"\xc1\xc1\xc1"), "not a vhtrace trace"),
        (_zstd({**make_header(), "byteorder": "big"}), "big-endian"),
        (_zstd({**make_header(), "mono_ns": "yesterday"}), "corrupt trace header"),
    ],
    ids=[
        "empty",
        "text",
        "binary",
        "magic then junk",
        "another format",
        "header not a map",
        "not msgpack",
        "big-endian host",
        "header field of the wrong type",
    ],
)
def test_input_that_is_not_a_trace_raises_trace_error(tmp_path, content, message) -> None:
    path = tmp_path / "bad.vht"
    path.write_bytes(content)
    with pytest.raises(TraceError, match=message) as caught:
        TraceReader(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_a_trace_error(tmp_path) -> None:
    with pytest.raises(TraceError, match="No such file"):
        TraceReader(tmp_path / "nowhere.vht")


def test_a_newer_format_version_says_which_vhtrace_reads_it(tmp_path) -> None:
    newer = max(fmt.READABLE_VERSIONS) + 1
    path = tmp_path / "newer.vht"
    header = {**make_header(), "version": newer, "needs": "9.4.0"}
    path.write_bytes(_zstd(header) + _zstd(("m", 1, 0, 0, 1, "main", "frontend", b"", (), 0)))
    with pytest.raises(TraceError) as caught:
        TraceReader(path)
    text = str(caught.value)
    assert f"trace format version {newer}" in text
    assert "this trace needs vhtrace >= 9.4.0" in text
    assert f"this is vhtrace {__version__}" in text


@pytest.mark.parametrize("version", sorted(fmt.READABLE_VERSIONS))
def test_every_readable_version_is_read(tmp_path, version) -> None:
    path = tmp_path / f"v{version}.vht"
    record = ("m", 1, 0, 0, 1, "main", "frontend", HEADER_RAW, (), 0)
    path.write_bytes(_zstd({**make_header(), "version": version}) + _zstd(record))
    reader = TraceReader(path)
    assert [r.seq for r in reader] == [1]
    assert reader.header["version"] == version
