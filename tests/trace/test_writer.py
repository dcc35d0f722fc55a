"""Trace format v1: every record type round trips; what is not a trace is refused."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import zstandard

from tests.trace.written import HEADER_RAW, write_every_record_type
from vhtrace import __version__
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceReader, read_trace
from vhtrace.trace.records import EndRecord
from vhtrace.trace.writer import TraceWriter


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


def test_summary_of_the_end_record_and_read_trace(tmp_path) -> None:
    path = tmp_path / "s.vht"
    with TraceWriter(str(path)) as writer:
        writer.message(1, 0, 0, 1, "main", "frontend", HEADER_RAW)
        writer.close({"messages": 1, "sessions": 1})
    header, records, problem = read_trace(path)
    assert header["format"] == "vhtrace"
    assert records[-1].summary == {"messages": 1, "sessions": 1}
    assert problem is None


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


# --------------------------------------------------------------------------
# Not a trace (bad input, exit 2 in the CLI)
# --------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# A writer killed with SIGKILL; when frames end
# ----------------------------------------------------------------------------


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
