"""Damaged traces: every complete record is read, then ``problem`` says why it stopped.

A trace is written by a recorder that can be killed at any moment, on a disk
that can fill up; it is also input from anywhere. The reader must never raise
on damage after the header: it yields what it could read and sets ``problem``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest
import zstandard

from tests.support import synthetic
from vhtrace.trace.reader import MAX_RECORD, TraceError, TraceReader
from vhtrace.trace.records import MessageRecord
from vhtrace.trace.writer import TraceWriter, make_header

MESSAGES = 600
FLUSH_EVERY = 50


@pytest.fixture(scope="module")
def flushed_trace(tmp_path_factory) -> tuple[bytes, list, list[tuple[int, int]]]:
    """A trace flushed every 50 messages: its bytes, its records, and after each
    flush (frame end offset, records complete by then)."""
    path = tmp_path_factory.mktemp("damage") / "flushed.vht"
    writer = TraceWriter(str(path), make_header())
    frames = []
    for seq, (session, message) in enumerate(synthetic.messages(MESSAGES), 1):
        fds = [synthetic.fd_meta(kind) for kind in message.fd_kinds]
        writer.message(seq, seq, seq, session, "main", message.sender.value, message.frame.raw, fds)
        if seq % FLUSH_EVERY == 0:
            writer.flush()
            frames.append((writer.bytes_written, seq))
    writer.close({"messages": MESSAGES})
    data = path.read_bytes()
    records = list(TraceReader(path))
    assert len(records) == MESSAGES + 1
    return data, records, frames


def read_bytes(tmp_path, data: bytes) -> tuple[list, str | None]:
    path = tmp_path / "damaged.vht"
    path.write_bytes(data)
    reader = TraceReader(path)
    return list(reader), reader.problem


def test_a_trace_cut_at_every_97th_byte_reads_up_to_the_cut(tmp_path, flushed_trace) -> None:
    data, full, frames = flushed_trace
    header_end = frames[0][0] - 1  # somewhere inside the first message frame
    refused = 0
    for cut in range(0, len(data), 97):
        try:
            records, problem = read_bytes(tmp_path, data[:cut])
        except TraceError as exc:
            # only a cut inside the header's own frame leaves nothing to read
            assert cut < header_end, (cut, exc)
            refused += 1
            continue
        assert problem is not None, cut
        assert records == full[: len(records)], cut  # a prefix, nothing invented
        whole_frames = [count for end, count in frames if end <= cut]
        assert len(records) >= (whole_frames[-1] if whole_frames else 0), cut
    assert refused >= 1  # the cut at byte 0


def test_a_trace_cut_inside_a_frame_keeps_the_records_decoded_so_far(
    tmp_path, flushed_trace
) -> None:
    data, _, frames = flushed_trace
    (end_a, count_a), (end_b, count_b) = frames[3], frames[4]
    records, problem = read_bytes(tmp_path, data[: (end_a + end_b) // 2])
    assert count_a <= len(records) < count_b
    assert problem.startswith(f"cut short inside the zstd frame starting at byte {end_a}")


def test_a_trace_cut_between_frames_says_the_writer_did_not_finish(tmp_path, flushed_trace) -> None:
    data, full, frames = flushed_trace
    end, count = frames[5]
    records, problem = read_bytes(tmp_path, data[:end])
    assert records == full[:count]
    assert problem.startswith("no end record")


@pytest.mark.parametrize("frame", [2, 6, 10])
def test_a_corrupted_byte_stops_reading_at_the_frame_it_is_in(tmp_path, flushed_trace, frame):
    data, full, frames = flushed_trace
    start, first = frames[frame - 1]
    end = frames[frame][0]
    damaged = bytearray(data)
    damaged[(start + end) // 2] ^= 0x5A
    records, problem = read_bytes(tmp_path, bytes(damaged))
    # the checksum catches it before any record of that frame is handed out
    assert records == full[:first]
    assert problem.startswith(f"corrupt data in the zstd frame starting at byte {start}")


def test_junk_after_a_torn_frame_is_reported_where_the_torn_frame_starts(
    tmp_path, flushed_trace
) -> None:
    """A restarted writer appending to a torn file: the reader stops at the tear."""
    data, full, frames = flushed_trace
    (end_a, count_a), (end_b, _) = frames[1], frames[2]
    torn = data[: (end_a + end_b) // 2] + data[end_a:]
    records, problem = read_bytes(tmp_path, torn)
    assert count_a <= len(records) and records == full[: len(records)]
    assert f"zstd frame starting at byte {end_a}" in problem


# --------------------------------------------------------------------------
# Records that parse but are not what they claim
# --------------------------------------------------------------------------


def _trace(*objects: object, raw: bytes = b"") -> bytes:
    """A hand-made trace: a header and these msgpack objects, then raw bytes, one frame."""
    packer = msgpack.Packer(use_bin_type=True)
    body = packer.pack(make_header()) + b"".join(packer.pack(o) for o in objects) + raw
    return zstandard.ZstdCompressor().compress(body)


GOOD = ("m", 1, 0, 0, 1, "main", "frontend", bytes(12), (), 0)


@pytest.mark.parametrize(
    "bad",
    [
        ("m", 2, 0, 0, 1, "main", "frontend", "raw as a string", (), 0),
        ("m", "2", 0, 0, 1, "main", "frontend", bytes(12), (), 0),
        ("m", 2, 0, 0, 1, "main", "frontend", bytes(12), (7,), 0),
        ("m", 2, 0, 0, 1, "nowhere", "frontend", bytes(12), (), 0),
        ("m", 2, 0, 0, 1, "main", "frontend", bytes(12)),
        ("c", 0, 0, 1, "session-start", ["not", "a", "map"]),
        ("f", 1, "not a finding map"),
        ("f", 1, {"severity": "catastrophic"}),
        ("s", 3, 0, 0, 1, "device-state", "backend", "text", ()),
        ("e", 0, 0),
        "not an array",
        (),
    ],
    ids=[
        "raw not bytes",
        "seq not an int",
        "fd metadata not a map",
        "unknown channel",
        "fields missing",
        "event info not a map",
        "finding not a map",
        "unknown severity",
        "stream data not bytes",
        "end without summary",
        "a string",
        "an empty array",
    ],
)
def test_a_type_confused_record_is_reported_not_raised(tmp_path, bad) -> None:
    records, problem = read_bytes(tmp_path, _trace(GOOD, bad, GOOD))
    assert len(records) == 1 and isinstance(records[0], MessageRecord)
    assert problem.startswith("corrupt")
    assert "after 1 records" in problem


def test_a_map_with_an_unhashable_key_is_reported_not_raised(tmp_path) -> None:
    # ("e", 1, 2, {{}: 1}) by hand: a map whose key is a map cannot be built in Python
    end_with_map_key = bytes([0x94, 0xA1, ord("e"), 0x01, 0x02, 0x81, 0x80, 0x01])
    records, problem = read_bytes(tmp_path, _trace(GOOD, raw=end_with_map_key))
    assert len(records) == 1
    assert problem.startswith("corrupt record after 1 records")


def test_a_corrupt_length_larger_than_any_record_stops_reading_in_bounded_memory(
    tmp_path,
) -> None:
    """A bin32 length of 48 MiB followed by more than MAX_RECORD of other bytes: the
    reader stops at MAX_RECORD instead of buffering on or raising BufferFull."""
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack(make_header()) + packer.pack(GOOD)
    lying = bytes([0x9A, 0xA1, ord("m"), 2, 0, 0, 1]) + packer.pack("main")
    lying += packer.pack("frontend") + b"\xc6" + (48 << 20).to_bytes(4, "big")
    path = tmp_path / "lying.vht"
    compressor = zstandard.ZstdCompressor()
    with open(path, "wb") as out:
        out.write(compressor.compress(head))
        chunker = compressor.chunker()
        for piece in chunker.compress(lying):
            out.write(piece)
        zeros = bytes(1 << 20)
        for _ in range((MAX_RECORD >> 20) + 8):
            for piece in chunker.compress(zeros):
                out.write(piece)
        for piece in chunker.finish():
            out.write(piece)
    reader = TraceReader(path)
    records = list(reader)
    assert len(records) == 1
    assert reader.problem == f"corrupt record after 1 records: larger than {MAX_RECORD >> 20} MiB"


# --------------------------------------------------------------------------
# A writer killed with SIGKILL
# --------------------------------------------------------------------------

KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    from tests.support import synthetic
    from vhtrace.trace.writer import TraceWriter

    writer = TraceWriter(sys.argv[1])
    seq = 0
    for session, message in synthetic.messages(1050):
        seq += 1
        writer.message(seq, seq, seq, session, "main", message.sender.value, message.frame.raw)
        if seq % 100 == 0:
            writer.maybe_flush(now=time.monotonic() + 1)  # as if the 100 ms had passed
    # 50 more messages were written but not flushed when the kill comes
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_writer_killed_with_sigkill_leaves_a_trace_readable_to_its_last_flush(tmp_path):
    path = tmp_path / "killed.vht"
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],  # the repo root: tests.support imports
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    reader = TraceReader(path)
    records = list(reader)
    assert [r.seq for r in records] == list(range(1, 1001))
    assert reader.problem.startswith("no end record")
    assert reader.end is None
    assert os.stat(path).st_size > 0


def test_maybe_flush_ends_a_frame_only_once_the_interval_has_passed(tmp_path) -> None:
    import time

    from vhtrace.trace import format as fmt

    writer = TraceWriter(str(tmp_path / "interval.vht"))
    written = writer.bytes_written
    writer.message(1, 0, 0, 1, "main", "frontend", bytes(12))
    writer.maybe_flush()
    assert writer.bytes_written == written  # buffered: the last flush was just now
    writer.maybe_flush(now=time.monotonic() + fmt.FLUSH_INTERVAL)
    assert writer.bytes_written > written
    writer.close()
