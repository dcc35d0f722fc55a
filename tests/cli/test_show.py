"""``vhtrace show``: lines, -V, -x, --json, every filter, --fail-on, damaged input."""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.synthetic import write_synthetic_trace
from vhtrace.protocol import spec

MESSAGE_LINE = re.compile(r"^\s*(\d+) +\d+\.\d{6} +(\d+) (\w+) +(FE>BE|BE>FE) (.*)$")


def message_lines(out: str) -> list[re.Match[str]]:
    return [m for line in out.splitlines() if (m := MESSAGE_LINE.match(line))]


def shown_seqs(out: str) -> list[int]:
    return [int(m.group(1)) for m in message_lines(out)]


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


# --------------------------------------------------------------------------
# The views
# --------------------------------------------------------------------------


def test_one_line_per_message_with_events_and_findings(run_cli, mixed_trace) -> None:
    code, out, err = run_cli("show", mixed_trace.path)
    assert (code, err) == (0, "")
    assert shown_seqs(out) == [m.seq for m in mixed_trace.messages]
    lines = {int(m.group(1)): m.group(0) for m in message_lines(out)}
    assert re.search(r" 1 main +FE>BE GET_FEATURES +0x1 +0$", lines[1])
    assert "BE>FE GET_FEATURES reply #1" in lines[2]
    assert "0x5     8" in lines[2] and "VERSION_1" in lines[2]
    assert "fds=memfd" in lines[18] and "gpa 0x0 size 2 GiB" in lines[18]
    assert "[1 error]" in lines[43] and "[1 warning]" in lines[46]
    assert "backend BE>FE VRING_CALL" in lines[47]
    assert out.count("session-start") == 2 and out.count("session-end") == 2
    assert "    error: MQ not negotiated" in out
    assert "finding 2 fds never closed" in out
    late = "finding #49 SET_VRING_ENABLE: NEED_REPLY set, no reply before the connection closed"
    assert late in out


def test_verbose_shows_every_field_fds_and_findings(run_cli, mixed_trace) -> None:
    code, out, _ = run_cli("show", "-V", "--range", "18-19", mixed_trace.path)
    assert code == 0
    assert "Message #18, session 1, channel main, from frontend, request" in out
    assert "Header: request 37 (ADD_MEM_REG), flags 0x9 (V1|NEED_REPLY), size 40" in out
    assert "fd 0: memfd 'memory-backend-memfd' size 2 GiB dev 0:1 ino 1000" in out
    assert "Payload (mem_region, 40 bytes):" in out
    assert "memory_size: 0x80000000" in out
    assert "Answers: #18" in out
    code, out, _ = run_cli("show", "-V", "--range", "43", mixed_trace.path)
    assert "Findings:" in out and "error: MQ not negotiated" in out


def test_hex_dump_of_each_message(run_cli, mixed_trace) -> None:
    code, out, _ = run_cli("show", "-x", "--range", "1-2", mixed_trace.path)
    assert code == 0
    assert "  0000  01 00 00 00 01 00 00 00 00 00 00 00" in out
    reply = mixed_trace.messages[1].frame.raw
    assert len(reply) == 20
    second_row = " ".join(f"{b:02x}" for b in reply[16:])
    assert f"  0010  {second_row}" in out


JSON_MESSAGE_KEYS = {
    "type",
    "seq",
    "time",
    "wall_ns",
    "session",
    "channel",
    "from",
    "role",
    "request",
    "request_id",
    "flags",
    "size",
    "answers",
    "fds",
    "record_flags",
    "layout",
    "fields",
    "summary",
    "findings",
}


def test_json_lines_parse_and_carry_the_schema(run_cli, mixed_trace) -> None:
    code, out, _ = run_cli("show", "--json", mixed_trace.path)
    assert code == 0
    objects = json_lines(out)
    messages = [o for o in objects if o["type"] == "message"]
    assert [o["seq"] for o in messages] == [m.seq for m in mixed_trace.messages]
    for obj in messages:
        assert set(obj) == JSON_MESSAGE_KEYS
    assert {o["type"] for o in objects} == {"message", "event", "finding", "end"}
    first, reply = messages[0], messages[1]
    assert (first["request"], first["request_id"], first["role"], first["from"]) == (
        "GET_FEATURES",
        1,
        "request",
        "frontend",
    )
    assert (reply["role"], reply["answers"], reply["flags"], reply["size"]) == ("reply", 1, 5, 8)
    assert reply["fields"] == {"features": mixed_trace.messages[1].frame.payload[0] | 0x170000200}
    add = messages[17]
    assert add["fds"][0]["kind"] == "memfd"
    assert add["fields"]["memory_size"] == 2 << 30
    assert [f["code"] for f in messages[42]["findings"]] == ["not-negotiated"]
    late = [o for o in objects if o["type"] == "finding" and o["seq"] == 49]
    assert [(f["code"], f["severity"], f["request"]) for f in late] == [
        ("no-reply", "error", "SET_VRING_ENABLE")
    ]
    assert objects[-1]["type"] == "end" and objects[-1]["summary"] == {"messages": 49}


def test_json_with_hex_adds_the_raw_bytes(run_cli, mixed_trace) -> None:
    _, out, _ = run_cli("show", "--json", "-x", "--range", "5", mixed_trace.path)
    (obj,) = [o for o in json_lines(out) if o["type"] == "message"]
    assert obj["raw"] == mixed_trace.messages[4].frame.raw.hex()


# --------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (["-r", "GET_QUEUE_NUM"], [6, 7, 43, 44]),
        (["-r", "SET_SLAVE_REQ_FD"], [10, 11]),  # the old name
        (["-r", "21"], [10, 11]),
        (["-r", "get_queue_num,GET_MAX_MEM_SLOTS"], [6, 7, 8, 9, 43, 44]),
        (["-r", "GET_QUEUE_NUM", "-r", "GET_MAX_MEM_SLOTS"], [6, 7, 8, 9, 43, 44]),
        (["-r", "BACKEND_VRING_CALL"], [47, 48]),
        (["-r", "SLAVE_VRING_CALL"], [47, 48]),
    ],
)
def test_request_filter_by_name_alias_id_and_list(run_cli, mixed_trace, terms, expected) -> None:
    code, out, _ = run_cli("show", *terms, mixed_trace.path)
    assert code == 0
    assert shown_seqs(out) == expected


def test_request_filter_glob(run_cli, mixed_trace) -> None:
    _, out, _ = run_cli("show", "-r", "SET_VRING_*", mixed_trace.path)
    names = {m.group(5).split()[0] for m in message_lines(out)}
    assert names == {f"SET_VRING_{n}" for n in ("CALL", "ERR", "NUM", "BASE", "ADDR", "KICK")} | {
        "SET_VRING_ENABLE"
    }
    expected = [
        m.seq
        for m in mixed_trace.messages
        if m.channel is spec.Channel.MAIN
        and spec.request_name(m.channel, m.frame.request).startswith("SET_VRING_")
    ]
    assert shown_seqs(out) == expected  # replies included: they match their request


def test_an_unknown_request_name_is_a_usage_error_with_suggestions(run_cli, mixed_trace) -> None:
    code, out, err = run_cli("show", "-r", "GET_FEATURE", mixed_trace.path)
    assert code == 2
    assert out == ""
    assert "--request GET_FEATURE: no such request (did you mean GET_FEATURES" in err


def test_channel_filter(run_cli, mixed_trace) -> None:
    _, out, _ = run_cli("show", "--channel", "backend", mixed_trace.path)
    assert shown_seqs(out) == mixed_trace.seqs(channel=spec.Channel.BACKEND) == [47, 48]
    assert "session-start" not in out  # events only without message filters


def test_sender_filter(run_cli, mixed_trace) -> None:
    _, out, _ = run_cli("show", "--json", "--from", "backend", mixed_trace.path)
    messages = [o for o in json_lines(out) if o["type"] == "message"]
    assert [o["seq"] for o in messages] == mixed_trace.seqs(sender=spec.Side.BACKEND)
    assert {o["from"] for o in messages} == {"backend"}


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [("40-45", range(40, 46)), ("47", [47]), ("-3", [1, 2, 3]), ("48-", [48, 49])],
)
def test_range_filter(run_cli, mixed_trace, bounds, expected) -> None:
    _, out, _ = run_cli("show", "--range", bounds, mixed_trace.path)
    assert shown_seqs(out) == list(expected)


@pytest.mark.parametrize("bounds", ["x", "1-y", "3-4-5"])
def test_a_bad_range_is_a_usage_error(run_cli, mixed_trace, bounds) -> None:
    code, _, err = run_cli("show", "--range", bounds, mixed_trace.path)
    assert code == 2
    assert f"--range {bounds}: expected N, A-B, A- or -B" in err


def test_session_filter(run_cli, mixed_trace) -> None:
    _, out, _ = run_cli("show", "--session", "2", mixed_trace.path)
    assert shown_seqs(out) == mixed_trace.seqs(session=2)
    assert out.count("session-start") == 1
    assert "finding #49" in out and "2 fds never closed" in out
    _, out, _ = run_cli("show", "--session", "1", mixed_trace.path)
    assert shown_seqs(out) == mixed_trace.seqs(session=1)
    # neither the late nor the recorder's finding of session 2
    assert "finding #49" not in out and "2 fds never closed" not in out
    assert run_cli("show", "--session", "1", "--fail-on", "warning", mixed_trace.path)[0] == 0


def test_findings_filter(run_cli, mixed_trace) -> None:
    _, out, _ = run_cli("show", "--findings", mixed_trace.path)
    assert shown_seqs(out) == [43, 46]
    assert "finding #49" in out  # known only at the end, still a finding


def test_device_names_virtio_bits(run_cli, mixed_trace) -> None:
    _, blk, _ = run_cli("show", "--range", "2", mixed_trace.path)  # the trace says blk
    assert "SEG_MAX|BLK_SIZE|FLUSH" in blk
    _, net, _ = run_cli("show", "--device", "net", "--range", "2", mixed_trace.path)
    assert "CTRL_GUEST_OFFLOADS|GSO|GUEST_ECN" in net


def test_count_stops_after_n_messages(run_cli, mixed_trace) -> None:
    code, out, _ = run_cli("show", "-c", "5", mixed_trace.path)
    assert (code, shown_seqs(out)) == (0, [1, 2, 3, 4, 5])


# --------------------------------------------------------------------------
# Exit codes
# --------------------------------------------------------------------------


def test_fail_on_error_and_warning(run_cli, mixed_trace, synthetic_trace) -> None:
    assert run_cli("show", mixed_trace.path)[0] == 0
    assert run_cli("show", "--fail-on", "error", mixed_trace.path)[0] == 1
    assert run_cli("show", "--fail-on", "warning", mixed_trace.path)[0] == 1
    # only what is shown counts: #46's warning alone is not an error
    assert run_cli("show", "--fail-on", "error", "--range", "46", mixed_trace.path)[0] == 0
    assert run_cli("show", "--fail-on", "warning", "--range", "46", mixed_trace.path)[0] == 1
    clean = synthetic_trace(36)  # one whole session: nothing to find
    assert run_cli("show", "--fail-on", "warning", clean)[0] == 0


def test_a_truncated_trace_prints_what_it_can_warns_and_exits_2(run_cli, mixed_trace) -> None:
    data = mixed_trace.path.read_bytes()
    cut = mixed_trace.path.with_name("cut.vht")
    cut.write_bytes(data[: len(data) - 40])
    code, out, err = run_cli("show", cut)
    assert code == 2
    assert shown_seqs(out) == [m.seq for m in mixed_trace.messages][: len(shown_seqs(out))]
    assert "vhtrace:" in err and str(cut) in err and "records read" in err
    code, out, err = run_cli("show", "--json", cut)
    assert code == 2
    assert all(json_lines(out))


def test_garbage_is_bad_input(run_cli, tmp_path) -> None:
    garbage = tmp_path / "garbage.vht"
    garbage.write_bytes(b"GET / HTTP/1.1\r\n\r\n")
    code, out, err = run_cli("show", garbage)
    assert (code, out) == (2, "")
    assert "not a vhtrace trace" in err
    code, out, err = run_cli("show", tmp_path / "missing.vht")
    assert code == 2 and "No such file" in err


def test_the_console_script(mixed_trace) -> None:
    script = shutil.which("vhtrace")
    if script is None:
        pytest.skip("the vhtrace console script is not installed (pip install -e .)")
    result = subprocess.run(
        [script, "show", "--json", "--range", "1-3", str(mixed_trace.path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["seq"] for o in lines if o["type"] == "message"] == [1, 2, 3]
    # a reader that goes away early (| head) is not an error
    shell = f"{script} show {mixed_trace.path} | head -1"
    piped = subprocess.run(shell, shell=True, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0
    assert "Traceback" not in piped.stderr


def test_late_findings_follow_the_request_and_direction_filters(run_cli, mixed_trace) -> None:
    # #49 SET_VRING_ENABLE never got its reply: a finding known only at the session's end.
    _, out, _ = run_cli("show", "-r", "SET_VRING_ENABLE", mixed_trace.path)
    assert "finding #49" in out
    code, out, _ = run_cli("show", "-r", "GET_FEATURES", "--fail-on", "error", mixed_trace.path)
    assert "finding #49" not in out and code == 0
    _, out, _ = run_cli("show", "--from", "backend", mixed_trace.path)
    assert "finding #49" not in out  # a front-end request's finding


def test_snapshots_are_listed_with_the_messages(run_cli) -> None:
    trace = Path(__file__).resolve().parents[2] / "traces" / "qemu-qsd-blk.vht"
    _, out, _ = run_cli("show", trace)
    snapshots = [line for line in out.splitlines() if " snapshot " in line]
    assert snapshots and "stop vring 0 after" in "".join(snapshots)
    _, out, _ = run_cli("show", "--json", trace)
    records = [json.loads(line) for line in out.splitlines()]
    kinds = {r["type"] for r in records}
    assert "snapshot" in kinds and "message" in kinds


# ----------------------------------------------------------------------------
# ``vhtrace show --follow``: a trace still being written, printed as it grows.
# ----------------------------------------------------------------------------


SHOW = [sys.executable, "-m", "vhtrace.cli.main", "show"]


def _lines_of(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The process's stdout, line by line, read by a thread (None at the end)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_a_growing_trace_is_printed_as_it_grows_and_ends_with_its_end_record(
    tmp_path: Path,
) -> None:
    whole = write_synthetic_trace(tmp_path / "whole.vht", 400, flush_every=10)
    data = whole.read_bytes()
    live = tmp_path / "live.vht"
    live.write_bytes(data[: len(data) // 2])  # the writer is somewhere inside a frame
    follower = subprocess.Popen(
        [*SHOW, "--follow", str(live)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = _lines_of(follower)
    first = lines.get(timeout=30)  # printed while the trace is still incomplete
    assert first is not None and "session-start" in first
    assert follower.poll() is None, "--follow stopped at the end of a trace still written"
    with live.open("ab") as growing:
        for cut in (len(data) * 3 // 4, len(data)):
            growing.write(data[growing.tell() : cut])
            growing.flush()
            time.sleep(0.2)
    assert follower.wait(timeout=30) == 0  # the end record came: done, like a whole trace
    printed = [first]
    while (line := lines.get(timeout=10)) is not None:
        printed.append(line)
    assert follower.stderr is not None and follower.stderr.read() == ""
    expected = subprocess.run([*SHOW, str(whole)], capture_output=True, text=True, check=True)
    assert "".join(printed) == expected.stdout


def test_follow_needs_a_file(run_cli) -> None:
    code, out, err = run_cli("show", "--follow", "-")
    assert (code, out) == (2, "")
    assert "--follow reads a trace file" in err


def test_follow_waits_for_a_trace_not_created_yet(tmp_path: Path) -> None:
    whole = write_synthetic_trace(tmp_path / "whole.vht", 50)
    later = tmp_path / "later.vht"
    follower = subprocess.Popen(
        [*SHOW, "--follow", str(later)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert follower.stderr is not None
    said = follower.stderr.readline()  # printed before it waits
    assert "later.vht: not there yet, waiting for it" in said
    assert follower.poll() is None, "--follow gave up on a trace not created yet"
    staged = tmp_path / "staged.vht"
    staged.write_bytes(whole.read_bytes())
    staged.rename(later)
    out, _ = follower.communicate(timeout=30)
    assert follower.returncode == 0
    expected = subprocess.run([*SHOW, str(whole)], capture_output=True, text=True, check=True)
    assert out == expected.stdout


def test_a_count_of_0_is_a_usage_error(run_cli, tmp_path: Path) -> None:
    trace = write_synthetic_trace(tmp_path / "t.vht", 5)
    code, out, err = run_cli("show", "-c", "0", trace)
    assert (code, out) == (2, "")
    assert "-c/--count: invalid _count value" not in err and "a count of at least 1" in err
    code, out, _ = run_cli("show", "-c", "1", trace)
    assert code == 0 and len([line for line in out.splitlines() if " main " in line]) == 1
