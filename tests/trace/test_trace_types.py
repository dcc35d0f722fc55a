"""Traces that decompress and unpack but hold values of the wrong type.

Every frame is valid zstd and every object valid msgpack, yet a header says
``version: {}`` or a snapshot ``stats: 1``: the reader checks the types of the
header and of the maps inside records (one schema, in vhtrace.trace.reader), so
every verb prints what came before the bad record, names it and its field in one
line and exits 2, instead of raising somewhere downstream.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vhtrace.cli.main import main
from vhtrace.trace import format as fmt
from vhtrace.trace.reader import TraceError, TraceReader, read_trace

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


# --------------------------------------------------------------------------
# The cases of issue 17
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Any value anywhere: exit 0 or 2, never a traceback
# --------------------------------------------------------------------------

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
