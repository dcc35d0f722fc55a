"""``vhtrace stats``: counts per request and channel, features, sessions, timeline, findings."""

from __future__ import annotations

import json
from collections import Counter

from tests.replay.builders import be_request, conversation, fe, write_trace
from vhtrace.protocol import device_config, spec
from vhtrace.protocol.spec import Channel, DeviceType


def expected_counts(mixed_trace) -> dict[str, dict[str, dict[str, int]]]:
    """Requests and replies per channel and request name, counted from what was sent."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for message in mixed_trace.messages:
        kind = "replies" if message.frame.flags & spec.FLAG_REPLY else "requests"
        name = spec.request_name(message.channel, message.frame.request)
        counts[(message.channel.value, name, kind)] += 1
    table: dict[str, dict[str, dict[str, int]]] = {}
    for (channel, name, kind), n in counts.items():
        row = table.setdefault(channel, {}).setdefault(name, {"requests": 0, "replies": 0})
        row[kind] = n
    return table


def test_text_summary(run_cli, mixed_trace) -> None:
    code, out, err = run_cli("stats", mixed_trace.path)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("Trace: vhtrace ")
    assert "49 messages over 0.000 s, 2 sessions" in lines[0]  # 49 us apart, to the ms
    assert "DAMAGED" not in lines[0]
    assert "Messages per channel: main 47, backend 2" in out
    assert "fds passed: eventfd 3, memfd 2, socket 1" in out
    table = expected_counts(mixed_trace)
    for channel, rows in table.items():
        assert f"  {channel}:" in out
        for name, row in rows.items():
            assert any(
                line.split() == [name, str(row["requests"]), str(row["replies"])] for line in lines
            ), name
    assert "Session 1: 36 messages" in out and "Session 2: 13 messages" in out


def test_text_features_offered_and_set(run_cli, mixed_trace) -> None:
    _, out, _ = run_cli("stats", mixed_trace.path)
    session2 = out[out.index("Session 2:") :]
    assert "protocol offered (back-end)  0x4428  REPLY_ACK BACKEND_REQ" in session2
    assert "protocol set (front-end)     0x4428" in session2
    assert "virtio offered (back-end)    0x140000000  PROTOCOL_FEATURES VERSION_1" in session2
    assert "queues 1, memory regions 0, rings used [0], postcopy none" in session2


def test_text_timeline_and_findings(run_cli, mixed_trace) -> None:
    _, out, _ = run_cli("stats", mixed_trace.path)
    session1 = out[out.index("Session 1:") : out.index("Session 2:")]
    for what in (
        "#5  protocol features set",
        "#10  back-end channel passed",
        "#18  memory region gpa 0x0 size 2 GiB added",
        "#30  ring 0 started",
        "#36  ring 0 stopped at 42",
        "#16  config read: offset 0 size 60 writable capacity 64 MiB",  # 1 << 17 sectors
        "session-end (eof)",
    ):
        assert what in session1, what
    assert "#47  first back-end channel message" in out
    assert "Findings: 2 errors, 2 warnings" in out
    assert "[2] error: #43 GET_QUEUE_NUM: MQ not negotiated" in out
    assert "[2] warning: #46 SET_VRING_NUM:" in out
    assert "[2] warning: 2 fds never closed" in out
    assert "[2] error: #49 SET_VRING_ENABLE: NEED_REPLY set, no reply" in out


def test_config_writes_and_changes_are_on_the_timeline(run_cli, tmp_path) -> None:
    writeback = device_config.encode(DeviceType.BLK, {"writeback": 1})[32:]
    window = {"offset": 32, "size": 1, "flags": 0, "region": writeback}
    trace = write_trace(
        tmp_path / "config.vht",
        [[*conversation(), fe("SET_CONFIG", window), be_request("CONFIG_CHANGE_MSG")]],
    )
    code, out, _ = run_cli("stats", trace)
    assert code == 0
    assert "config written: offset 32 size 1 writable writeback 1" in out
    assert "the back-end's config changed" in out


def test_one_of_a_kind_reads_in_the_singular(run_cli, tmp_path) -> None:
    code, out, _ = run_cli("stats", write_trace(tmp_path / "one.vht", [conversation()]))
    assert code == 0
    assert out.splitlines()[0].endswith(" 1 session")
    errors = sum(1 for line in out.splitlines() if line.startswith("  [1] error: "))
    warnings = sum(1 for line in out.splitlines() if line.startswith("  [1] warning: "))
    assert 1 in (errors, warnings), out  # the case this test is about
    nouns = [f"{errors} error" + ("" if errors == 1 else "s"),
             f"{warnings} warning" + ("" if warnings == 1 else "s")]  # fmt: skip
    assert f"Findings: {nouns[0]}, {nouns[1]}" in out


def test_json_summary(run_cli, mixed_trace) -> None:
    code, out, _ = run_cli("stats", "--json", mixed_trace.path)
    assert code == 0
    data = json.loads(out)
    assert data["trace"]["complete"] is True and data["trace"]["problem"] is None
    assert data["trace"]["device"] == "blk"
    assert data["messages"] == {"main": 47, "backend": 2}
    assert data["fds"] == {"socket": 1, "memfd": 2, "eventfd": 3}
    assert data["requests"] == expected_counts(mixed_trace)
    sessions = {s["session"]: s for s in data["sessions"]}
    assert (sessions[1]["messages"], sessions[2]["messages"]) == (36, 13)
    features = sessions[2]["features"]
    assert features["protocol_offered_by_backend"]["value"] == 0x4428
    assert features["protocol_set_by_frontend"]["names"] == [
        "REPLY_ACK",
        "BACKEND_REQ",
        "BACKEND_SEND_FD",
        "INBAND_NOTIFICATIONS",
    ]
    assert features["protocol_not_taken"] is None
    assert sessions[1]["features"]["max_mem_slots"] == 509
    assert {"time", "seq", "what"} <= set(sessions[1]["timeline"][0])
    assert [t["seq"] for t in sessions[2]["timeline"] if t["seq"]] == [37, 41, 42, 47, 49]
    assert [(f["session"], f["seq"], f["code"]) for f in data["findings"]] == [
        (2, 43, "not-negotiated"),
        (2, 46, "ring-repeat"),
        (2, None, "fd-leak"),
        (2, 49, "no-reply"),
    ]


def test_features_not_taken_by_the_front_end(run_cli, tmp_path) -> None:
    from vhtrace.protocol.messages import build
    from vhtrace.trace.writer import TraceWriter

    path = tmp_path / "not-taken.vht"
    offered, taken = 1 << 30 | 1 << 32 | 1 << 29, 1 << 30 | 1 << 32
    with TraceWriter(str(path)) as writer:
        for seq, (sender, frame) in enumerate(
            [
                ("frontend", build("GET_FEATURES")),
                ("backend", build("GET_FEATURES", {"features": offered}, reply=True)),
                ("frontend", build("SET_FEATURES", {"features": taken})),
            ],
            1,
        ):
            writer.message(seq, seq, seq, 1, Channel.MAIN.value, sender, frame.raw)
    _, out, _ = run_cli("stats", "--json", path)
    features = json.loads(out)["sessions"][0]["features"]
    assert features["virtio_not_taken"] == {"value": 1 << 29, "names": ["RING_EVENT_IDX"]}
    _, text, _ = run_cli("stats", path)
    assert "virtio not taken             0x20000000  RING_EVENT_IDX" in text


def test_fail_on(run_cli, mixed_trace, synthetic_trace) -> None:
    assert run_cli("stats", "--fail-on", "error", mixed_trace.path)[0] == 1
    assert run_cli("stats", "--fail-on", "warning", mixed_trace.path)[0] == 1
    clean = synthetic_trace(36)
    assert run_cli("stats", "--fail-on", "warning", clean)[0] == 0


def test_a_damaged_trace_is_summarised_and_exits_2(run_cli, mixed_trace) -> None:
    data = mixed_trace.path.read_bytes()
    cut = mixed_trace.path.with_name("cut.vht")
    cut.write_bytes(data[: len(data) - 40])
    code, out, err = run_cli("stats", cut)
    assert code == 2
    assert "[DAMAGED: " in out.splitlines()[0]
    assert "records read" in err
    code, out, _ = run_cli("stats", "--json", cut)
    assert code == 2
    trace = json.loads(out)["trace"]
    assert trace["complete"] is False and trace["problem"]


def test_garbage_is_bad_input(run_cli, tmp_path) -> None:
    garbage = tmp_path / "garbage.vht"
    garbage.write_bytes(bytes(100))
    code, out, err = run_cli("stats", garbage)
    assert (code, out) == (2, "")
    assert "not a vhtrace trace" in err


def test_stats_names_the_qemu_a_negotiated_protocol_bit_needs() -> None:
    from vhtrace.cli.stats import _needs_qemu
    from vhtrace.protocol.spec import ProtocolFeature as PF

    acked = 1 << PF.REPLY_ACK | 1 << PF.DEVICE_STATE | 1 << PF.GPA_ADDRESSES
    assert _needs_qemu(acked) == {"DEVICE_STATE": "8.2", "GPA_ADDRESSES": "11.1"}
    assert _needs_qemu(1 << PF.REPLY_ACK | 1 << PF.STATUS) == {}
    assert _needs_qemu(None) == {}


def test_each_session_says_its_device_and_how_it_is_known(run_cli, tmp_path) -> None:
    """The device the recorder named (session-start), else the one the messages tell."""
    net_only = 1 << 0 | 1 << 5 | 1 << 15 | 1 << 16 | 1 << 17 | 1 << 22 | 1 << 32
    told = write_trace(tmp_path / "told.vht", [conversation(features=net_only)], device=None)
    _, out, _ = run_cli("stats", "--json", told)
    [session] = json.loads(out)["sessions"]
    assert session["device"] == {
        "type": "net",
        "from": "from the feature bits offered: MQ (bit 22) only net defines",
    }
    _, text, _ = run_cli("stats", told)
    assert "  Device: net (from the feature bits offered: MQ (bit 22) only net defines)" in text
    unknown = write_trace(tmp_path / "unknown.vht", [conversation(features=1 << 32)], device=None)
    _, out, _ = run_cli("stats", "--json", unknown)
    assert json.loads(out)["sessions"][0]["device"] is None
