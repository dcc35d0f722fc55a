"""How messages, events and snapshots read: one line each, verbose blocks, JSON lines."""

from __future__ import annotations

import json

from tests.replay.builders import START_NS, analysed, conversation
from vhtrace import render
from vhtrace.analysis import AnalysedMessage
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.trace import format as fmt
from vhtrace.trace.records import EventRecord, MessageRecord, SnapshotRecord

HEADER = {"mono_ns": START_NS}


def items() -> list[AnalysedMessage]:
    return [i for i in analysed(conversation()) if isinstance(i, AnalysedMessage)]


def test_counted_words() -> None:
    assert [render.counted(n, "error") for n in (0, 1, 2)] == ["0 errors", "1 error", "2 errors"]


def test_fd_details_say_everything_recorded_on_one_line() -> None:
    meta = {"kind": "memfd", "name": "guest", "size": 1 << 21, "dev": "0:1", "ino": 7,
            "seals": ["shrink"], "flags": ["rdwr"]}  # fmt: skip
    assert render.fd_details(meta) == (
        "memfd 'guest' size 2 MiB dev 0:1 ino 7 seals ['shrink'] flags ['rdwr']"
    )
    assert render.fd_details({"kind": "other", "error": "EBADF"}) == "other error: EBADF"
    assert render.fd_label({}) == "fd"


def test_a_message_line_has_number_time_session_direction_name_and_summary() -> None:
    first, reply = items()[:2]
    line = render.message_line(HEADER, first)
    assert line.split()[:6] == ["1", "0.000001", "1", "main", "FE>BE", "GET_FEATURES"]
    reply_line = render.message_line(HEADER, reply)
    assert "BE>FE GET_FEATURES reply #1" in reply_line
    assert render.message_name(reply) == "GET_FEATURES reply #1"


def test_fds_and_marks_show_on_the_line() -> None:
    kick = next(i for i in items() if i.analysis.name == "SET_VRING_KICK")
    assert "fds=eventfd" in render.message_line(HEADER, kick)
    finding = Finding(kick.record.seq, "SET_VRING_KICK", "x", "bad", Severity.WARNING)
    kick.analysis.findings.append(finding)
    record = kick.record._replace(flags=fmt.MESSAGE_INCOMPLETE)
    marked = render.message_line(HEADER, AnalysedMessage(record, kick.wire, kick.analysis))
    assert marked.endswith("[incomplete] [1 warning]")


def test_hexdump_has_offsets_hex_and_printable_text() -> None:
    lines = render.hexdump(b"GET_FEATURES\x00\x01\x02\x03tail")
    assert lines[0] == "  0000  47 45 54 5f 46 45 41 54 55 52 45 53 00 01 02 03  GET_FEATURES...."
    assert lines[1].startswith("  0010  74 61 69 6c") and lines[1].endswith("tail")


def test_event_and_snapshot_lines() -> None:
    event = EventRecord(START_NS + 2_000_000, 0, 1, "session-start", {"frontend": {"pid": 4}})
    assert render.event_line(HEADER, event).split() == [
        "0.002000", "1", "---", "session-start", "frontend={pid:", "4}"
    ]  # fmt: skip
    info = {"mode": "rings", "ring": 0, "request": "GET_VRING_BASE",
            "stats": {"pages": 4, "new_pages": 1}}  # fmt: skip
    snapshot = SnapshotRecord(3, 9, START_NS + 500_000_000, 0, 1, "stop", info)
    assert render.snapshot_line(HEADER, snapshot).split() == [
        "0.500000", "1", "---", "snapshot", "3", "stop", "vring", "0", "after", "#9",
        "GET_VRING_BASE:", "rings,", "4", "pages,", "1", "new",
    ]  # fmt: skip
    timer = snapshot._replace(seq=0, trigger="timer", info={"mode": "full"})
    assert render.snapshot_line(HEADER, timer).endswith("snapshot 3 timer: full, 0 pages, 0 new")


def test_jsonable_turns_bytes_to_hex_and_keys_to_strings() -> None:
    value = {"region": b"\x01\xff", (1, 2): [b"\x00", (3,)], "n": 5}
    assert render.jsonable(value) == {"region": "01ff", "[1, 2]": ["00", [3]], "n": 5}


def test_json_lines_of_a_message_and_an_event() -> None:
    renderer = render.JsonRenderer(HEADER, with_raw=True)
    first = items()[0]
    data = json.loads(renderer.message(first))
    assert (data["type"], data["seq"], data["session"], data["answers"]) == ("message", 1, 1, None)
    assert data["raw"] == first.record.raw.hex() and data["findings"] == []
    event = json.loads(renderer.event(EventRecord(START_NS, 5, 1, "session-end", {"b": b"\x01"})))
    assert event == {"type": "event", "time": 0.0, "wall_ns": 5, "session": 1,
                     "event": "session-end", "info": {"b": "01"}}  # fmt: skip


def test_a_raw_record_is_labelled_by_its_request() -> None:
    record = MessageRecord(4, 0, 0, 1, "main", "frontend", bytes.fromhex("01000000") + bytes(8), ())
    assert render.message_from_record(record) == "#4 GET_FEATURES"
