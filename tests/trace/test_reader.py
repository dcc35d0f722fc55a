"""Damaged traces: every complete record is read, then ``problem`` says why it stopped.

A trace is written by a recorder that can be killed at any moment, on a disk
that can fill up; it is also input from anywhere. The reader must never raise
on damage after the header: it yields what it could read and sets ``problem``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import subprocess
import sys
import tempfile
import traceback
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import synthetic
from tests.trace.written import HEADER_RAW, write_every_record_type, zstd_frame
from vhtrace.cli.main import main
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import MAX_RECORD, READ_CHUNK, TraceError, TraceReader, read_trace
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


# ----------------------------------------------------------------------------
# The reader streams: its memory does not grow with the trace, and it reads as it goes.
# ----------------------------------------------------------------------------


def peak_while_reading(path) -> tuple[int, int]:
    """(records, peak bytes allocated) over reading the whole trace."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        count = 0
        for _ in TraceReader(path):
            count += 1
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return count, peak


@pytest.fixture(scope="module")
def small_and_large(tmp_path_factory, write_trace):
    where = tmp_path_factory.mktemp("streaming")
    # both larger than the reader's read size, the second three times the first
    small = write_trace(where / "small.vht", 100_000)
    large = write_trace(where / "large.vht", 300_000)
    return small, large


def test_memory_while_reading_does_not_grow_with_the_trace(small_and_large) -> None:
    small, large = small_and_large
    small_count, small_peak = peak_while_reading(small)
    large_count, large_peak = peak_while_reading(large)
    assert large_count > 2.9 * small_count
    # three times the records (3 MiB of zstd, 20 MiB of records), the same working set:
    # a read chunk, a frame's worth of records and their buffers
    assert large_peak < 1.2 * small_peak
    assert large_peak < 16 << 20


class CountingFile(io.BufferedReader):
    """A file that remembers how far it was read."""

    def __init__(self, path) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.consumed += len(data)
        return data


def test_records_come_out_before_the_file_is_read_to_its_end(small_and_large) -> None:
    _, large = small_and_large
    size = large.stat().st_size
    assert size > 2 * READ_CHUNK
    with CountingFile(large) as source:
        records = iter(TraceReader(source))
        next(records)
        assert source.consumed <= READ_CHUNK + 4
        for _ in range(1000):
            next(records)
        assert source.consumed < size


# ----------------------------------------------------------------------------
# Traces that decompress and unpack but hold values of the wrong type.
# ----------------------------------------------------------------------------


TRACES = Path(__file__).resolve().parents[2] / "traces"

REAL = TRACES / "qemu-qsd-blk.vht"
"""A real trace with messages, fds, events and two snapshots (start, stop)."""


def decode(path: Path) -> list[Any]:
    """The msgpack objects of a trace: the header map, then the records (as lists)."""
    with open(path, "rb") as file:
        data = zstandard.ZstdDecompressor().stream_reader(file, read_across_frames=True).read()
    return list(msgpack.Unpacker(io.BytesIO(data), raw=False, strict_map_key=False))


def encode(objects: list[Any]) -> bytes:
    """A valid trace file holding these objects: one zstd frame, each object packed."""
    packer = msgpack.Packer(use_bin_type=True)
    return zstandard.ZstdCompressor().compress(b"".join(packer.pack(o) for o in objects))


def snapshot_indexes(objects: list[Any]) -> list[int]:
    return [i for i, o in enumerate(objects) if isinstance(o, list) and o[0] == fmt.TAG_SNAPSHOT]


def run_verb(argv: list[str]) -> tuple[int, str, str]:
    """vhtrace's main() in this process: (exit code, stdout, stderr). An exception that
    escapes main() is what a user would see as a traceback: returned in stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:
            traceback.print_exc()
            code = -1
    return code, out.getvalue(), err.getvalue()


def verbs(trace: Path, other: Path, scratch: Path) -> dict[str, list[str]]:
    """Every verb that reads a trace, as argv (diff compares the trace with ``other``)."""
    return {
        "show": ["show", str(trace)],
        "show --json": ["show", "--json", str(trace)],
        "stats": ["stats", str(trace)],
        "rings": ["rings", str(trace)],
        "export": ["export", str(trace), "-o", str(scratch / "out.pcapng")],
        "diff": ["diff", str(trace), str(other)],
        "memory": ["memory", "--at", "1", str(trace)],
    }


def _header(key: str, value: Any) -> Callable[[list[Any]], None]:
    def mutate(objects: list[Any]) -> None:
        objects[0][key] = value

    return mutate


def _last_snapshot(key: str, value: Any) -> Callable[[list[Any]], None]:
    def mutate(objects: list[Any]) -> None:
        objects[snapshot_indexes(objects)[-1]][7][key] = value

    return mutate


HEADER_CASES = [
    ("version", {}, "version: expected int, got map", ["show", "show --json", "stats", "rings",
                                                       "export", "diff"]),
    ("mono_ns", None, "mono_ns: expected int, got nil", ["show", "stats", "rings"]),
    ("command", 1, "command: expected array, got int", ["export"]),
]  # fmt: skip

SNAPSHOT_CASES = [
    ("stats", 1, "info.stats: expected map, got int", ["show", "rings"]),
    ("rings", 1, "info.rings: expected array, got int", ["show", "rings"]),
    ("inflight", 1, "info.inflight: expected map or nil, got int", ["show", "rings"]),
    ("message_mono_ns", "x", "info.message_mono_ns: expected int or nil, got str",
     ["show", "rings"]),
    ("mode", b"rings", "info.mode: expected str, got bin", ["show --json", "show", "rings"]),
]  # fmt: skip


def _write(tmp_path: Path, objects: list[Any], name: str = "bad.vht") -> Path:
    path = tmp_path / name
    path.write_bytes(encode(objects))
    return path


def _only_line_with(err: str, text: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if text in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("key", "value", "says", "verb"),
    [(k, v, s, verb) for k, v, s, verbs_ in HEADER_CASES for verb in verbs_],
)
def test_a_header_value_of_the_wrong_type_is_one_line_and_exit_2(
    tmp_path: Path, key: str, value: Any, says: str, verb: str
) -> None:
    objects = decode(REAL)
    _header(key, value)(objects)
    bad = _write(tmp_path, objects)
    code, out, err = run_verb(verbs(bad, REAL, tmp_path)[verb])
    line = _only_line_with(err, says)
    assert code == 2, err
    assert "corrupt trace header" in line and str(bad) in line
    assert out == ""  # nothing of a trace whose header is wrong is shown


@pytest.mark.parametrize(
    ("key", "value", "says", "verb"),
    [(k, v, s, verb) for k, v, s, verbs_ in SNAPSHOT_CASES for verb in verbs_],
)
def test_a_snapshot_value_of_the_wrong_type_stops_there_with_one_line_and_exit_2(
    tmp_path: Path, key: str, value: Any, says: str, verb: str
) -> None:
    objects = decode(REAL)
    index = snapshot_indexes(objects)[-1]
    number = objects[index][1]
    _last_snapshot(key, value)(objects)
    bad = _write(tmp_path, objects)
    code, out, err = run_verb(verbs(bad, REAL, tmp_path)[verb])
    line = _only_line_with(err, says)
    assert code == 2, err
    assert f"'i' record after {index - 1} records (snapshot {number})" in line
    # what came before the bad record is shown: the messages, the first snapshot
    good_code, good_out, _ = run_verb(verbs(REAL, REAL, tmp_path)[verb])
    assert good_code == 0
    assert out and good_out.startswith(out[: len(out) // 2])
    if verb == "rings":
        assert "snapshot 1" in out and f"snapshot {number}" not in out


def test_a_message_fd_map_of_the_wrong_type_names_the_message(tmp_path: Path) -> None:
    objects = decode(REAL)
    index, record = next(
        (i, o) for i, o in enumerate(objects) if isinstance(o, list) and o[0] == "m" and o[8]
    )
    record[8][0]["ino"] = "not a number"
    code, out, err = run_verb(["show", str(_write(tmp_path, objects))])
    line = _only_line_with(err, "fds[0].ino: expected int, got str")
    assert code == 2
    assert f"'m' record after {index - 1} records (message #{record[1]})" in line
    assert len(out.splitlines()) >= record[1] - 1


def test_an_event_info_of_the_wrong_type_names_the_field(tmp_path: Path) -> None:
    objects = decode(REAL)
    event = next(o for o in objects if isinstance(o, list) and o[0] == "c")
    event[5]["frontend"] = {"pid": b"\x01"}
    code, _, err = run_verb(["stats", str(_write(tmp_path, objects))])
    _only_line_with(err, "info.frontend.pid: expected int, got bin")
    assert code == 2


def test_the_python_api_reports_the_same_problem(tmp_path: Path) -> None:
    objects = decode(REAL)
    _last_snapshot("stats", 1)(objects)
    _, records, problem = read_trace(_write(tmp_path, objects))
    assert len(records) == snapshot_indexes(objects)[-1] - 1
    assert problem is not None and "info.stats: expected map, got int 1" in problem
    objects[0]["version"] = {}
    with pytest.raises(TraceError, match="version: expected int, got map"):
        TraceReader(_write(tmp_path, objects))


@pytest.mark.parametrize("path", sorted(TRACES.glob("*.vht")), ids=lambda p: p.name)
def test_every_real_trace_passes_the_type_checks(path: Path) -> None:
    _, _, problem = read_trace(path)
    assert problem is None


REAL_OBJECTS = {path.name: decode(path) for path in sorted(TRACES.glob("*.vht"))}

JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.sampled_from([-(1 << 63), (1 << 64) - 1, -1, 0, 1 << 32])
    | st.floats(allow_nan=True)
    | st.binary(max_size=24)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=8,
)


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The paths to every value inside ``value`` (keys and indexes from the top)."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _containers(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _containers(item, (*path, index))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated_traces(draw: st.DrawFn) -> list[Any]:
    """A real trace with one to three values replaced: by junk, nil, a huge int, the
    bytes of a string, or a map or array of junk."""
    objects = copy.deepcopy(REAL_OBJECTS[draw(st.sampled_from(sorted(REAL_OBJECTS)))])
    for _ in range(draw(st.integers(1, 3))):
        # the header, a snapshot or a random record: the maps are where types go wrong
        pick = draw(st.sampled_from(["header", "snapshot", "any"]))
        snapshots = snapshot_indexes(objects)
        if pick == "header":
            index = 0
        elif pick == "snapshot" and snapshots:
            index = draw(st.sampled_from(snapshots))
        else:
            index = draw(st.integers(0, len(objects) - 1))
        paths = [p for p in _containers(objects[index]) if p]
        if not paths:
            continue
        path = draw(st.sampled_from(paths))
        old = _get(objects[index], path)
        if isinstance(old, str) and draw(st.booleans()):
            new: Any = old.encode()
        else:
            new = draw(JUNK)
        _get(objects[index], path[:-1])[path[-1]] = new
    return objects


@settings(
    max_examples=int(os.environ.get("VHTRACE_CAMPAIGN_EXAMPLES") or 50),  # scripts/hostile-campaign
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(objects=mutated_traces())
def test_any_wrong_value_reads_to_exit_0_or_2_without_a_traceback(objects: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        trace = Path(scratch) / "mutated.vht"
        trace.write_bytes(encode(objects))
        for name, argv in verbs(trace, trace, Path(scratch)).items():
            code, _, err = run_verb(argv)
            assert "Traceback" not in err, (name, err)
            if name == "memory":  # 1: bytes asked for that the snapshot did not capture
                assert code in (0, 1, 2), (name, code, err)
            else:
                assert code in (0, 2), (name, code, err)
        try:
            with TraceReader(trace) as reader:
                records = list(reader)
        except TraceError:
            return
        assert reader.problem is None or isinstance(reader.problem, str)
        assert all(isinstance(record, tuple) for record in records)


def test_a_real_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """The same through the installed entry point's module, in its own process: what a
    user sees is the one line, not a traceback."""
    objects = decode(REAL)
    number = objects[snapshot_indexes(objects)[-1]][1]
    _last_snapshot("rings", 1)(objects)
    bad = _write(tmp_path, objects)
    result = subprocess.run(
        [sys.executable, "-m", "vhtrace.cli.main", "rings", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"(snapshot {number}): info.rings: expected array, got int 1" in result.stderr
    assert "snapshot 1" in result.stdout


# ----------------------------------------------------------------------------
# What the reader refuses, skips and reads from
# ----------------------------------------------------------------------------


def test_a_trace_reads_from_a_file_object_too(tmp_path) -> None:
    path = tmp_path / "f.vht"
    expected = write_every_record_type(path)
    reader = TraceReader(io.BytesIO(path.read_bytes()))
    assert list(reader)[:-1] == expected


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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "does not start with a zstd frame"),
        (b"hello, this is a text file\n", "does not start with a zstd frame"),
        (bytes(range(256)) * 4, "does not start with a zstd frame"),
        (fmt.MAGIC + b"\x00garbage after the magic", "not a vhtrace trace"),
        (zstd_frame({"format": "pcapng", "version": 1}), "no vhtrace header"),
        (zstd_frame([1, 2, 3]), "no vhtrace header"),
        (zstandard.ZstdCompressor().compress(b"\xc1\xc1\xc1"), "not a vhtrace trace"),
        (zstd_frame({**make_header(), "byteorder": "big"}), "big-endian"),
        (zstd_frame({**make_header(), "mono_ns": "yesterday"}), "corrupt trace header"),
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
