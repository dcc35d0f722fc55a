"""The comments of an exported packet: a metadata line Lua and scapy parse back, fds, findings."""

from __future__ import annotations

from tests.replay.builders import analysed, conversation
from vhtrace.analysis import AnalysedMessage
from vhtrace.dissect.meta import META_PREFIX, RecordInfo, comments, meta_line, parse_meta_line
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.protocol.payloads import PayloadContext
from vhtrace.protocol.spec import Channel, DeviceType, Side
from vhtrace.trace import format as fmt


def messages() -> list[AnalysedMessage]:
    return [i for i in analysed(conversation()) if isinstance(i, AnalysedMessage)]


def test_a_reply_says_what_it_answers_and_parses_back() -> None:
    reply = RecordInfo.of(messages()[1])
    line = meta_line(reply)
    assert line.startswith(META_PREFIX + " v=1 session=1 seq=2 channel=main sender=backend")
    parsed = parse_meta_line(line)
    assert parsed is not None
    assert (parsed["role"], parsed["request"], parsed["answers"]) == ("reply", "GET_FEATURES", "1")
    assert "ctx" not in parsed and "cut" not in parsed


def test_context_device_and_cut_flags_are_named() -> None:
    info = RecordInfo(1, 9, Channel.MAIN, Side.FRONTEND, "request", "SET_VRING_ADDR", "vring_addr",
                      PayloadContext(packed=True, device=DeviceType.NET),
                      record_flags=fmt.MESSAGE_INCOMPLETE | fmt.MESSAGE_DROPPED)  # fmt: skip
    parsed = parse_meta_line(meta_line(info))
    assert parsed is not None
    assert (parsed["ctx"], parsed["device"], parsed["cut"]) == (
        "packed",
        "net",
        "incomplete,dropped",
    )
    assert info.cut == ["incomplete", "dropped"]


def test_other_comments_are_not_metadata() -> None:
    assert parse_meta_line("fd 0: eventfd") is None
    assert parse_meta_line(META_PREFIX + "x=1") is None


def test_comments_are_the_metadata_then_fds_then_findings() -> None:
    memory = next(m for m in messages() if m.analysis.name == "ADD_MEM_REG")
    info = RecordInfo.of(memory)
    late = Finding(memory.record.seq, "ADD_MEM_REG", "x", "late", Severity.WARNING)
    lines = comments(info.with_findings([late]))
    assert lines[0] == meta_line(info)
    assert lines[1].startswith("fd 0: memfd 'guest-ram' size 1 MiB")
    assert lines[2:] == [f"error: {info.findings[0]}", f"warning: {late}"]
    assert info.with_findings([]) is info
