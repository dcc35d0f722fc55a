"""What a report draws, built from a trace apart from any drawing.

One pass over the trace with the analysis ``show`` uses: every message becomes a row
(its lanes follow from its channel and sender), with ``show -V``'s lines for it; events,
snapshots (with ``vhtrace rings``' view), findings known only later and stream bytes
become rows of their own; idle gaps longer than ``gap_s`` become a row that says so;
``stats`` gathers the features and the milestones on the way. Texts are interned in one
table and a message's constant part (everything but its number, time, pairing, fds and
findings) is built once per distinct message, so that 100,000 messages cost little more
than reading them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vhtrace import render
from vhtrace.analysis import AnalysedMessage, LateFindings, analyser_for, device_of
from vhtrace.cli.filters import MessageFilter, display_name
from vhtrace.cli.stats import as_dict
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.stats import TraceStats
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import (
    EventRecord,
    FindingRecord,
    MessageRecord,
    SnapshotRecord,
    StreamRecord,
)

DEFAULT_GAP_S = 1.0
"""Idle time between two rows of a session that is collapsed into a marked gap row."""

# row kinds (the first element of every row)
MESSAGE, EVENT, SNAPSHOT, GAP, FINDING, STREAM, SESSION = range(7)
NONE = -1
"""An absent text or number in a row."""
_REQUEST = Role.REQUEST
SEVERITY_LEVEL = {Severity.WARNING: 1, Severity.ERROR: 2}

ROW_FIELDS = {
    MESSAGE: ("kind", "seq", "session", "t_us", "label", "shape", "answers", "rtt_us", "fds",
              "findings", "milestones", "severity"),
    EVENT: ("kind", "seq", "session", "t_us", "text"),
    SNAPSHOT: ("kind", "seq", "session", "t_us", "text", "rings", "snapshot"),
    GAP: ("kind", "seq", "session", "t_us", "idle_us"),
    FINDING: ("kind", "seq", "session", "t_us", "text", "severity"),
    STREAM: ("kind", "seq", "session", "t_us", "channel", "sender", "bytes"),
    SESSION: ("kind", "seq", "session", "t_us"),
}  # fmt: skip
"""What each position of a row holds, by kind (rows are lists: compact in the page)."""
SHAPE_FIELDS = ("channel", "sender", "role", "request", "summary", "header", "payload")
"""A message's constant part: the same for every message with the same bytes and meaning."""


class Texts:
    """Strings interned in one table: a row refers to its texts by index."""

    def __init__(self) -> None:
        self.table: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self.table)
            self.table.append(text)
        return index


@dataclass
class Report:
    """Everything a report draws; plain data (lists, dicts, strings, numbers)."""

    title: str
    trace: dict[str, Any]
    """Where and when it was recorded, whether it is complete."""
    lanes: list[str]
    """Lane names left to right: front-end, back-end, then the channels present."""
    texts: list[str]
    shapes: list[list[int]]
    """Each a message's constant part, as SHAPE_FIELDS (texts by index)."""
    fds: list[list[int]]
    """(label, show -V lines) of each distinct set of fds passed."""
    rows: list[list[int]]
    sessions: list[dict[str, Any]]
    """stats' per-session summary: features, timeline."""
    findings: list[dict[str, Any]]
    messages: int
    """Messages in the trace (rows hold those the filters let through)."""
    filtered: bool
    verbose_title: str = render.VERBOSE_TITLE
    verbose_answers: str = render.VERBOSE_ANSWERS
    problem: str | None = None
    fold: bool = False
    """Whether the page starts with repeated runs folded (the reader can switch it)."""

    def message_rows(self) -> list[list[int]]:
        return [row for row in self.rows if row[0] == MESSAGE]

    def text(self, index: int) -> str:
        return "" if index == NONE else self.texts[index]

    def as_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        # the page's script names sessions; their features and timelines are in the HTML
        data["sessions"] = [
            {key: session[key] for key in ("session", "start", "end", "messages")}
            for session in self.sessions
        ]
        del data["findings"]  # listed in the HTML; the rows carry their own
        data["row_fields"] = {str(kind): names for kind, names in ROW_FIELDS.items()}
        data["shape_fields"] = SHAPE_FIELDS
        return data


@dataclass
class _Builder:
    """The rows of one report, made as the records come (one pass, in trace order)."""

    header: dict[str, Any]
    message_filter: MessageFilter
    gap_ns: int
    texts: Texts = field(default_factory=Texts)
    shapes: list[list[int]] = field(default_factory=list)
    fds: list[list[int]] = field(default_factory=list)
    rows: list[list[int]] = field(default_factory=list)
    lanes: set[str] = field(default_factory=set)
    _shape_index: dict[tuple[Any, ...], int] = field(default_factory=dict)
    _fds_index: dict[str, int] = field(default_factory=dict)
    _request_ns: dict[int, int] = field(default_factory=dict)
    _by_seq: dict[int, list[int]] = field(default_factory=dict)
    _last_ns: dict[int, int] = field(default_factory=dict)
    _labels: dict[Any, int] = field(default_factory=dict)
    _sessions: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.origin = int(self.header.get("mono_ns", 0))
        self.show_events = not self.message_filter.narrows_events
        self.filtering = self.message_filter != MessageFilter()

    def _place(self, session: int, mono_ns: int, seq: int = 0) -> int:
        """Time of a new row of a session, after its session row and any gap row."""
        t_us = (mono_ns - self.origin) // 1000
        if session not in self._sessions:
            self._sessions.add(session)
            self.rows.append([SESSION, seq, session, t_us])
        last = self._last_ns.get(session)
        if last is not None and mono_ns - last > self.gap_ns:
            self.rows.append([GAP, seq, session, (last - self.origin) // 1000,
                              (mono_ns - last) // 1000])  # fmt: skip
        self._last_ns[session] = mono_ns
        return t_us

    def _shape(self, item: AnalysedMessage, key: tuple[Any, ...]) -> int:
        """A new message's constant part (the ones seen before are found by their key)."""
        record, analysis = item.record, item.analysis
        self.lanes.add(record.channel)
        text = self.texts
        name = display_name(record.channel, analysis.name)
        shape = [text(record.channel), text(record.sender), text(str(analysis.role)),
                 text(name), text(analysis.summary()), text(render.verbose_header(item)),
                 text("\n".join(render.verbose_payload(item)))]  # fmt: skip
        index = self._shape_index[key] = len(self.shapes)
        self.shapes.append(shape)
        return index

    def _fds(self, fds: tuple[dict[str, Any], ...]) -> int:
        lines = "\n".join(render.verbose_fds(fds))
        index = self._fds_index.get(lines)
        if index is None:
            label = "fds=" + ",".join(render.fd_label(meta) for meta in fds)
            index = self._fds_index[lines] = len(self.fds)
            self.fds.append([self.texts(label), self.texts(lines)])
        return index

    def message(self, item: AnalysedMessage) -> None:
        seq, mono_ns, _, session, channel, sender, raw, fds, flags = item.record
        analysis = item.analysis
        answers = analysis.answers
        if answers is None and analysis.role is _REQUEST:
            self._request_ns[seq] = mono_ns
        if self.filtering and not self.message_filter.matches(item):
            return
        last = self._last_ns.get(session)
        if last is None or mono_ns - last > self.gap_ns:
            t_us = self._place(session, mono_ns, seq)
        else:
            self._last_ns[session] = mono_ns
            t_us = (mono_ns - self.origin) // 1000
        key = (raw, channel, sender, flags, analysis.role, analysis.name, analysis.layout,
               analysis.context)  # fmt: skip
        shape = self._shape_index.get(key)
        if shape is None:
            shape = self._shape(item, key)
        if answers is None:
            label = self._labels.get(shape)
            if label is None:
                label = self._label(item, shape)
            answers = rtt = NONE
        else:
            label = self.texts(render.message_name(item))  # "... reply #N": one per reply
            sent = self._request_ns.get(answers)
            rtt = NONE if sent is None else (mono_ns - sent) // 1000
        findings = analysis.findings
        row = [MESSAGE, seq, session, t_us, label, shape, answers, rtt,
               self._fds(fds) if fds else NONE,
               self.texts("\n".join(render.verbose_findings(findings))) if findings else NONE,
               NONE, _worst(findings) if findings else 0]  # fmt: skip
        self.rows.append(row)
        self._by_seq[seq] = row

    def _label(self, item: AnalysedMessage, key: Any) -> int:
        """The text on the arrow (show's name for it), by shape and the request answered."""
        if len(self._labels) > 65536:
            self._labels.clear()
        label = self._labels[key] = self.texts(render.message_name(item))
        return label

    def late_finding(self, session: int, finding: Finding) -> None:
        """A finding about a message known later (a reply that never came), or about the
        transport: on its message's row if that is shown, else a row of its own."""
        if self.message_filter.session not in (None, session):
            return
        bounds = self.message_filter.seq_range
        if bounds and finding.seq is not None and not bounds[0] <= finding.seq <= bounds[1]:
            return
        row = self._by_seq.get(finding.seq) if finding.seq is not None else None
        if row is not None:
            lines = render.verbose_findings([finding])
            old = self.texts.table[row[9]].split("\n") if row[9] != NONE else lines[:1]
            row[9] = self.texts("\n".join(old + lines[1:]))
            row[11] = max(row[11], SEVERITY_LEVEL[finding.severity])
            return
        if self.filtering and not self.show_events and finding.seq is None:
            return
        last = self._last_ns.get(session, self.origin)
        self.rows.append([FINDING, finding.seq or 0, session, (last - self.origin) // 1000,
                          self.texts(str(finding)),
                          SEVERITY_LEVEL[finding.severity]])  # fmt: skip

    def other(self, record: Any) -> None:
        if isinstance(record, LateFindings):
            for finding in record.findings:
                self.late_finding(record.session, finding)
        elif isinstance(record, FindingRecord):
            self.late_finding(record.session, record.finding)
        elif not self.show_events or not isinstance(record, _SHOWN):
            return  # pages, extents, the end record: not drawn
        elif self.message_filter.session not in (None, record.session):
            return
        elif isinstance(record, EventRecord):
            info = " ".join(f"{k}={render._info_value(v)}" for k, v in record.info.items())
            t_us = self._place(record.session, record.mono_ns)
            self.rows.append([EVENT, 0, record.session, t_us,
                              self.texts(f"{record.event} {info}".rstrip())])  # fmt: skip
        elif isinstance(record, SnapshotRecord):
            line = render.snapshot_line(self.header, record)
            text = line[line.index("snapshot ") :]
            t_us = self._place(record.session, record.mono_ns)
            self.rows.append([SNAPSHOT, record.seq, record.session, t_us, self.texts(text),
                              NONE, record.snapshot])  # fmt: skip
        elif isinstance(record, StreamRecord):
            self.lanes.add(record.channel)
            t_us = self._place(record.session, record.mono_ns)
            self.rows.append([STREAM, record.seq, record.session, t_us,
                              self.texts(record.channel), self.texts(record.sender),
                              len(record.data)])  # fmt: skip

    def milestones(self, sessions: list[dict[str, Any]]) -> None:
        """stats' timeline entries on the rows of their messages."""
        for session in sessions:
            for entry in session["timeline"]:
                row = self._by_seq.get(entry["seq"]) if entry["seq"] is not None else None
                if row is not None:
                    before = self.texts.table[row[10]] + "; " if row[10] != NONE else ""
                    row[10] = self.texts(before + entry["what"])


def _worst(findings: list[Finding]) -> int:
    return max(SEVERITY_LEVEL[f.severity] for f in findings)


_SHOWN = (EventRecord, SnapshotRecord, StreamRecord)


def lane_names(present: set[str]) -> list[str]:
    """front-end, back-end, then the back-end channel and the streams that occur."""
    lanes = ["front-end", "back-end"]
    if "backend" in present:
        lanes.append("back-end channel")
    lanes += sorted(present - {"main", "backend"})
    return lanes


def build(
    reader: TraceReader,
    *,
    message_filter: MessageFilter | None = None,
    device: str | None = None,
    gap_s: float = DEFAULT_GAP_S,
    rings: Callable[[], dict[int, list[str]]] | None = None,
    title: str | None = None,
) -> Report:
    """The report of a trace. ``rings`` gives ``vhtrace rings``' view of each snapshot by
    number (cli.rings.snapshot_texts): it reads the file again, so it is called only for
    a trace that has snapshots."""
    header = reader.header
    message_filter = message_filter or MessageFilter()
    builder = _Builder(header, message_filter, int(gap_s * 1e9))
    analyser = analyser_for(header, device)
    stats = TraceStats(count_requests=False)
    conversations = analyser.conversations
    add, message, other = stats.add, builder.message, builder.other
    total = 0
    analyse = analyser.message
    for record in reader:  # Analyser.run, unrolled as show does: nearly all are messages
        if type(record) is MessageRecord:
            item = analyse(record)
            add(item, conversations)
            message(item)
            total += 1
            continue
        for other_item in analyser.feed(record):
            add(other_item, conversations)
            other(other_item)
    for other_item in analyser.finish():
        add(other_item, conversations)
        other(other_item)
    summary = as_dict(header, stats, reader.problem, device_of(header, device))
    if message_filter.session is not None:  # the other sessions are not drawn
        for key in ("sessions", "findings"):
            summary[key] = [s for s in summary[key] if s["session"] == message_filter.session]
    builder.milestones(summary["sessions"])
    snapshots = [row for row in builder.rows if row[0] == SNAPSHOT]
    if snapshots and rings is not None:
        views = rings()
        for row in snapshots:
            if row[6] in views:
                row[5] = builder.texts("\n".join(views[row[6]]))
    wall = header.get("wall_ns")
    when = datetime.fromtimestamp(wall / 1e9, UTC).isoformat(timespec="seconds") if wall else "?"
    return Report(
        title=title or str(reader.path),
        trace={**summary["trace"], "when": when},
        lanes=lane_names(builder.lanes | {"main"}),
        texts=builder.texts.table,
        shapes=builder.shapes,
        fds=builder.fds,
        rows=builder.rows,
        sessions=summary["sessions"],
        findings=summary["findings"],
        messages=total,
        filtered=builder.filtering,
        problem=reader.problem,
    )
