"""How analysed messages look: tshark-like lines, a verbose tree, hex, JSON lines.

Shared by ``vhtrace show`` and ``vhtrace record --print``. The JSON schema is
documented in docs/cli.md ("JSON output").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vhtrace.analysis import AnalysedMessage, LateFindings
from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.protocol.payloads import human_size
from vhtrace.trace import format as fmt
from vhtrace.trace.records import (
    EndRecord,
    EventRecord,
    FindingRecord,
    MessageRecord,
    SnapshotRecord,
)


def _compact_encoder() -> Callable[[Any], str]:
    """Compact JSON with one C encoder for all calls: JSONEncoder.encode builds a new one
    per call (json.dumps with options even a new JSONEncoder), which takes longer than
    encoding the small values here. Same output; no circular check (msgpack data and
    decoded payloads hold no cycles)."""
    encoder = json.JSONEncoder(separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: nothing to gain
        return encoder.encode
    iterencode = make(None, encoder.default, json.encoder.encode_basestring_ascii, None,
                      ":", ",", False, False, True)  # fmt: skip
    return lambda value: "".join(iterencode(value, 0))


_dumps = _compact_encoder()
DIRECTIONS = {"frontend": "FE>BE", "backend": "BE>FE"}
CHANNEL_WIDTH = 7


def counted(n: int, word: str) -> str:
    """``1 error``, ``2 errors``, ``0 errors``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def relative_time(header: dict[str, Any], mono_ns: int) -> float:
    return (mono_ns - int(header.get("mono_ns", mono_ns))) / 1e9


def fd_label(meta: dict[str, Any]) -> str:
    """One word for an fd: its kind (memfd, eventfd, socket, userfaultfd, ...)."""
    return str(meta.get("kind", "fd"))


def fd_details(meta: dict[str, Any]) -> str:
    """Everything recorded about an fd, on one line."""
    parts = [fd_label(meta)]
    if meta.get("name"):
        parts.append(repr(meta["name"]))
    if "size" in meta and meta["size"] is not None:
        parts.append(f"size {human_size(int(meta['size']))}")
    if "dev" in meta:
        parts.append(f"dev {meta['dev']} ino {meta.get('ino')}")
    if meta.get("seals"):
        parts.append(f"seals {meta['seals']}")
    if meta.get("flags"):
        parts.append(f"flags {meta['flags']}")
    if meta.get("path"):
        parts.append(str(meta["path"]))
    if meta.get("error"):
        parts.append(f"error: {meta['error']}")
    return " ".join(parts)


def message_name(item: AnalysedMessage) -> str:
    analysis = item.analysis
    if analysis.role is Role.REPLY:
        return f"{analysis.name} reply" + (f" #{analysis.answers}" if analysis.answers else "")
    if analysis.role is Role.POSTCOPY_ACK:
        return f"{analysis.name} postcopy-ack"
    return analysis.name


def message_line(header: dict[str, Any], item: AnalysedMessage) -> str:
    """The one-line view of a message."""
    record, flags, size = item.record, item.wire.flags, item.wire.size
    fds = ""
    if record.fds:
        fds = "fds=" + ",".join(fd_label(meta) for meta in record.fds)
    summary = item.analysis.summary()
    marks = []
    if record.flags & fmt.MESSAGE_OVERSIZED:
        marks.append("[oversized]")
    if record.flags & fmt.MESSAGE_INCOMPLETE:
        marks.append("[incomplete]")
    if record.flags & fmt.MESSAGE_DROPPED:
        marks.append("[dropped]")
    if item.analysis.findings:
        errors = sum(1 for f in item.analysis.findings if f.severity is Severity.ERROR)
        warnings = len(item.analysis.findings) - errors
        if errors:
            marks.append(f"[{errors} error{'s' if errors > 1 else ''}]")
        if warnings:
            marks.append(f"[{warnings} warning{'s' if warnings > 1 else ''}]")
    text = (
        f"{record.seq:6} {relative_time(header, record.mono_ns):11.6f} {record.session:2} "
        f"{record.channel:<{CHANNEL_WIDTH}} {DIRECTIONS.get(record.sender, record.sender)} "
        f"{message_name(item):<28} 0x{flags:x} {size:5} {fds:<10} {summary}"
    )
    if marks:
        text += " " + " ".join(marks)
    return text.rstrip()


def finding_lines(findings: list[Finding], indent: str = "         ") -> list[str]:
    return [f"{indent}{finding.severity}: {finding.text}" for finding in findings]


VERBOSE_TITLE = "  Message #{seq}, session {session}, channel {channel}, from {sender}, {role}"
"""The first line of ``show -V`` (a template: ``vhtrace report`` fills it in the page)."""
VERBOSE_ANSWERS = "    Answers: #{answers}"


def message_verbose(header: dict[str, Any], item: AnalysedMessage) -> list[str]:
    """Every field of a message, tshark -V style."""
    record, analysis = item.record, item.analysis
    lines = [
        VERBOSE_TITLE.format(seq=record.seq, session=record.session, channel=record.channel,
                             sender=record.sender, role=analysis.role),
        verbose_header(item),
    ]  # fmt: skip
    if analysis.answers is not None:
        lines.append(VERBOSE_ANSWERS.format(answers=analysis.answers))
    lines += verbose_fds(record.fds)
    lines += verbose_payload(item)
    lines += verbose_findings(analysis.findings)
    return lines


def verbose_header(item: AnalysedMessage) -> str:
    """The header line of ``show -V``: request, flags, size."""
    request, flags, size = item.wire.request, item.wire.flags, item.wire.size
    name = spec.request_name(spec.Channel(item.record.channel), request)
    flag_text = "|".join(spec.flag_names(flags))
    return f"    Header: request {request} ({name}), flags 0x{flags:x} ({flag_text}), size {size}"


def verbose_fds(fds: tuple[dict[str, Any], ...]) -> list[str]:
    return [f"    fd {index}: {fd_details(meta)}" for index, meta in enumerate(fds)]


def verbose_payload(item: AnalysedMessage) -> list[str]:
    """The decoded payload of ``show -V``: a function of the bytes and their meaning."""
    analysis = item.analysis
    if analysis.layout is None:
        return []
    return [f"    Payload ({analysis.layout}, {len(item.record.payload)} bytes):"] + [
        "      " + line for line in analysis.details()
    ]


def verbose_findings(findings: list[Finding]) -> list[str]:
    if not findings:
        return []
    return ["    Findings:", *finding_lines(findings, indent="      ")]


def hexdump(data: bytes, indent: str = "  ") -> list[str]:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{indent}{offset:04x}  {hexes:<47}  {text}")
    return lines


def event_line(header: dict[str, Any], record: EventRecord) -> str:
    info = " ".join(f"{k}={_info_value(v)}" for k, v in record.info.items())
    return (
        f"{'':6} {relative_time(header, record.mono_ns):11.6f} {record.session:2} "
        f"{'---':<{CHANNEL_WIDTH}} {record.event} {info}"
    ).rstrip()


def _info_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_info_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def snapshot_line(header: dict[str, Any], record: SnapshotRecord) -> str:
    """A shared-memory snapshot in the message list (``vhtrace rings`` shows its contents)."""
    info = record.info
    stats = info.get("stats") or {}
    where = f" after #{record.seq} {info.get('request', '')}".rstrip() if record.seq else ""
    ring = f" vring {info['ring']}" if info.get("ring") is not None else ""
    return (
        f"{'':6} {relative_time(header, record.mono_ns):11.6f} {record.session:2} "
        f"{'---':<{CHANNEL_WIDTH}} snapshot {record.snapshot} {record.trigger}{ring}{where}: "
        f"{info.get('mode', '?')}, {stats.get('pages', 0)} pages, "
        f"{stats.get('new_pages', 0)} new"
    )


def late_finding_lines(item: LateFindings) -> list[str]:
    return [f"{'':6} {'':11} {item.session:2} finding {finding}" for finding in item.findings]


def transport_finding_line(record: FindingRecord) -> str:
    return f"{'':6} {'':11} {record.session:2} finding {record.finding}"


# --------------------------------------------------------------------------
# JSON lines
# --------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Fields with bytes turned into hex strings, tuples into lists."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _json_key(key: Any) -> Any:
    """A map key JSON can hold (msgpack maps may have bytes or array keys)."""
    return key if isinstance(key, str | int | float | bool | None) else str(jsonable(key))


def _fds_json(fds: tuple[dict[str, Any], ...]) -> str:
    try:
        return _dumps(fds)
    except TypeError:  # bytes, or keys JSON has no form for
        return _dumps(jsonable(fds))


class JsonRenderer:
    """One JSON object per line; payload fields are encoded once per distinct payload."""

    def __init__(self, header: dict[str, Any], with_raw: bool = False) -> None:
        self.header = header
        self.with_raw = with_raw
        self._origin = int(header.get("mono_ns", 0))
        self._fields_cache: dict[tuple[Any, ...], str] = {}

    def _constant_part(self, item: AnalysedMessage, key: tuple[Any, ...]) -> str:
        """Everything but number, times, session, pairing, fds and findings: the same for
        every message with the same bytes and meaning (``key``), so encoded once."""
        record, analysis, wire = item.record, item.analysis, item.wire
        if len(self._fields_cache) > 65536:
            self._fields_cache.clear()
        text = self._fields_cache[key] = (
            f'"channel":"{record.channel}","from":"{record.sender}",'
            f'"role":"{analysis.role}","request":{_dumps(analysis.name)},'
            f'"request_id":{wire.request},"flags":{wire.flags},"size":{wire.size},'
            f'"record_flags":{record.flags},"layout":{_dumps(analysis.layout)},'
            f'"fields":{_dumps(jsonable(analysis.fields))},'
            f'"summary":{_dumps(analysis.summary())}'
        )
        return text

    def message(self, item: AnalysedMessage) -> str:
        seq, mono_ns, wall_ns, session, channel, sender, raw, fds, flags = item.record
        analysis = item.analysis
        key = (raw, channel, sender, flags, analysis.role, analysis.name, analysis.layout,
               analysis.context)  # fmt: skip
        constant = self._fields_cache.get(key) or self._constant_part(item, key)
        answers = analysis.answers
        findings = analysis.findings
        end = f',"raw":"{raw.hex()}"}}' if self.with_raw else "}"
        return (
            f'{{"type":"message","seq":{seq},'
            f'"time":{(mono_ns - self._origin) / 1e9:.9f},"wall_ns":{wall_ns},'
            f'"session":{session},{constant},'
            f'"answers":{"null" if answers is None else answers},'
            f'"fds":{_fds_json(fds) if fds else "[]"},'
            f'"findings":{_dumps([f.to_dict() for f in findings]) if findings else "[]"}'
            f"{end}"
        )

    def event(self, record: EventRecord) -> str:
        return _dumps(
            {
                "type": "event",
                "time": (record.mono_ns - self._origin) / 1e9,
                "wall_ns": record.wall_ns,
                "session": record.session,
                "event": record.event,
                "info": jsonable(record.info),
            }
        )

    def finding(self, session: int, finding: Finding) -> str:
        return _dumps({"type": "finding", "session": session, **finding.to_dict()})

    def snapshot(self, record: SnapshotRecord) -> str:
        info = record.info
        return _dumps({
            "type": "snapshot", "snapshot": record.snapshot, "seq": record.seq or None,
            "time": (record.mono_ns - self._origin) / 1e9, "wall_ns": record.wall_ns,
            "session": record.session, "trigger": record.trigger, "mode": info.get("mode"),
            "ring": info.get("ring"), "stats": jsonable(info.get("stats") or {}),
        })  # fmt: skip

    def end(self, record: EndRecord) -> str:
        return _dumps(
            {
                "type": "end",
                "time": (record.mono_ns - self._origin) / 1e9,
                "wall_ns": record.wall_ns,
                "summary": jsonable(record.summary),
            }
        )


def message_from_record(record: MessageRecord) -> str:
    """A label for a raw record without analysis (for error texts)."""
    request, _, _ = record.header
    return f"#{record.seq} {spec.request_name(spec.Channel(record.channel), request)}"
