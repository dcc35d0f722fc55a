"""The recorder: everything ``vhtrace record`` does that is not relaying.

It gets what crossed the wire as typed hand-off items (:mod:`vhtrace.record.handoff`)
with the recorder's own copies of the fds, and describes the fds, analyses the
conversation, prints (``--print``), takes shared-memory snapshots and writes the
trace. It runs in a process of its own, fed over a socket (:mod:`vhtrace.record.link`),
so that none of this takes the relay's time; it knows nothing of sockets itself.

A failure here (a full disk) stops the recording, never the relay: the link tells the
relay, which stops handing over fds and says, with these statistics, from which
message on nothing was recorded.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from vhtrace import fdinfo, render
from vhtrace.analysis import Analyser
from vhtrace.memory.capture import SnapshotResult
from vhtrace.memory.recording import MemoryRecorder, SnapshotConfig, close_unkept
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.record.handoff import Relayed, SnapshotNow, ToRecorder
from vhtrace.trace.records import EventRecord, FindingRecord, MessageRecord
from vhtrace.trace.writer import TraceWriter

NOT_DESCRIBED = {"kind": "other", "error": "not described: no copy reached the recorder"}
"""The metadata of an fd whose copy the relay shed (fd-metadata-shed) or lost."""


class HeldMessage(Protocol):
    """What a before:NAME snapshot releases (memory.hold.Hold's interface)."""

    @property
    def done(self) -> bool: ...
    @property
    def expired(self) -> bool: ...
    def release(self) -> bool: ...


@dataclass
class RecorderStats:
    messages: Counter[str] = field(default_factory=Counter)
    """Messages per channel."""
    stream_bytes: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    """Sessions the trace names (started, or failed to reach the other side): as show lists."""
    failed_sessions: int = 0
    """... of which could not reach the other side."""
    errors: int = 0
    warnings: int = 0
    dropped: int = 0
    failed: str = ""
    """Why the recording stopped early ('' while it works)."""
    unrecorded_from: int | None = None
    """The first message number not recorded after a failure."""

    def summary_line(self, path: str) -> str:
        per_channel = ", ".join(f"{c} {n}" for c, n in sorted(self.messages.items())) or "none"
        total = sum(self.messages.values())
        counted = render.counted
        findings = counted(self.errors + self.warnings, "finding")
        text = (
            f"{counted(total, 'message')} ({per_channel}), {counted(self.sessions, 'session')}"
            + (f" ({self.failed_sessions} FAILED)" if self.failed_sessions else "")
            + f", {findings} ({counted(self.errors, 'error')}, "
            f"{counted(self.warnings, 'warning')})"
        )
        if self.stream_bytes:
            text += ", streams " + ", ".join(f"{c} {n} B" for c, n in self.stream_bytes.items())
        if self.dropped:
            text += f", {self.dropped} records DROPPED"
        if self.failed:
            text += f", RECORDING FAILED ({self.failed})"
            if self.unrecorded_from is not None:
                text += f": nothing recorded from message #{self.unrecorded_from} on"
        return f"{text} -> {path}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": dict(self.messages),
            "stream_bytes": dict(self.stream_bytes),
            "sessions": self.sessions,
            "failed_sessions": self.failed_sessions,
            "errors": self.errors,
            "warnings": self.warnings,
            "dropped": self.dropped,
        } | (
            {"failed": self.failed, "unrecorded_from": self.unrecorded_from} if self.failed else {}
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecorderStats:
        return cls(
            Counter(data.get("messages", {})),
            Counter(data.get("stream_bytes", {})),
            int(data.get("sessions", 0)),
            int(data.get("failed_sessions", 0)),
            int(data.get("errors", 0)),
            int(data.get("warnings", 0)),
            int(data.get("dropped", 0)),
            str(data.get("failed", "")),
            data.get("unrecorded_from"),
        )


class Recorder:
    """Consumes what the relay saw and writes the trace."""

    def __init__(
        self,
        writer: TraceWriter,
        device: Any = None,
        print_to: TextIO | None = None,
        on_finding: Callable[[int, Finding], None] | None = None,
        snapshots: SnapshotConfig | None = None,
    ) -> None:
        self.writer = writer
        self.analyser = Analyser(device)
        self.print_to = print_to
        self.on_finding = on_finding
        self.stats = RecorderStats()
        self._sessions: set[int] = set()
        self.last_seq = 0
        """The last message number recorded."""
        self.current_seq: int | None = None
        """The message being recorded (for a failure's 'nothing recorded from #N on')."""
        self.memory: MemoryRecorder | None = None
        """Shared-memory snapshots (None with --memory=none)."""
        if snapshots is not None and snapshots.active:
            self.memory = MemoryRecorder(
                snapshots, writer, self._on_finding, self.analyser.conversation, self._announce
            )

    def handle(self, item: ToRecorder, fds: list[int], hold: HeldMessage | None = None) -> None:
        """Record one item; closes (or keeps, for snapshots) its fds, even when it fails."""
        if isinstance(item, Relayed):
            record = item.record
            self.current_seq = record.seq
            if type(record) is MessageRecord:
                self._message(record, fds, hold)
            else:
                metas = self._describe(fds, record.fds)
                self.writer.write(record._replace(fds=tuple(metas)))
                self.stats.stream_bytes[record.channel] += len(record.data)
            self.last_seq = max(self.last_seq, record.seq)
            self.current_seq = None
        elif isinstance(item, EventRecord):
            self._event(item)
        elif isinstance(item, FindingRecord):
            self._on_finding(item.session, item.finding)
        elif isinstance(item, SnapshotNow) and self.memory is not None:
            self._guarded(0, self.memory.on_demand, item.trigger)

    def tick(self) -> None:
        """Call often: timed snapshots and the writer's periodic flush."""
        if self.memory is not None:
            self._guarded(0, self.memory.tick)
        self.writer.maybe_flush()

    def finish(self, summary_extra: dict[str, Any] | None = None) -> None:
        """Close the snapshots and the trace (with its end record)."""
        if self.memory is not None:
            self.memory.close()
        summary = self.stats.as_dict()
        summary.update(summary_extra or {})
        self.writer.close(summary)

    def failed(self, exc: BaseException) -> None:
        """Recording stopped on ``exc``: say so in the statistics (and the trace, if it can)."""
        lost = self.current_seq if self.current_seq is not None else self.last_seq + 1
        self.stats.failed = str(exc) or type(exc).__name__
        self.stats.unrecorded_from = lost
        with contextlib.suppress(BaseException):  # the trace's end says so, if the disk takes it
            self.writer.close(self.stats.as_dict())

    # -- items ------------------------------------------------------------------------

    def _describe(
        self, fds: list[int], notes: tuple[dict[str, Any], ...], close: bool = True
    ) -> list[dict[str, Any]]:
        metas = []
        for index in range(max(len(fds), len(notes))):
            # One map per fd the message carried: a copy the relay could not make (short
            # of fds: it said so in a finding) is still counted, so that the message
            # reads as carrying its fds.
            meta = fdinfo.describe(fds[index]) if index < len(fds) else dict(NOT_DESCRIBED)
            if index < len(notes) and notes[index]:
                meta.update(notes[index])
            metas.append(meta)
        if close:
            for fd in fds:
                os.close(fd)
        return metas

    def _message(self, relayed: MessageRecord, fds: list[int], hold: HeldMessage | None) -> None:
        memory = self.memory
        kept: set[int] = set()
        try:
            metas = self._describe(fds, relayed.fds, close=memory is None)
            record = relayed._replace(fds=tuple(metas))
            if memory is not None:
                self._guarded(record.session, memory.before, record, hold)
            self.writer.write(record)
            self.stats.messages[record.channel] += 1
            item = self.analyser.message(record)
            for finding in item.analysis.findings:
                self._count(record.session, finding)
            if self.print_to is not None:
                lines = [render.message_line(self.writer.header, item)]
                lines += render.finding_lines(item.analysis.findings)
                self.print_to.write("\n".join(lines) + "\n")
                self.print_to.flush()
            if memory is not None:
                self._guarded(record.session, memory.after, item, fds, metas, kept)
        finally:
            if hold is not None and not hold.done:
                hold.release()
            if memory is not None:
                close_unkept(fds, kept)

    def _event(self, record: EventRecord) -> None:
        self.writer.write(record)
        session, event = record.session, record.event
        if event in ("session-start", "session-failed") and session not in self._sessions:
            self._sessions.add(session)
            self.stats.sessions += 1
        if event == "session-failed":
            self.stats.failed_sessions += 1
        if event in ("session-end", "session-failed") and self.memory is not None:
            self._guarded(session, self.memory.session_ended, session)
        for item in self.analyser.feed(record):
            for finding in getattr(item, "findings", ()):
                self._count(session, finding)  # late findings: show derives them again
        if self.print_to is not None:
            self.print_to.write(render.event_line(self.writer.header, record) + "\n")
            self.print_to.flush()

    def _guarded(self, session: int, call: Callable[..., Any], *args: Any) -> Any:
        """Snapshot code must never stop the recording: a failure becomes a finding."""
        try:
            return call(*args)
        except Exception as exc:  # reported; the trace goes on
            finding = Finding(None, "", "snapshot-failed", f"snapshot failed: {exc!r}")
            self._on_finding(session, finding)
            return None

    def _announce(self, session: int, seq: int, trigger: str, result: SnapshotResult) -> None:
        """--print: one line per snapshot."""
        if self.print_to is None:
            return
        stats = result.stats
        where = f"#{seq} " if seq else ""
        self.print_to.write(
            f"{'':6} {'':11} {session:2} ---     snapshot {result.snapshot} {where}{trigger}: "
            f"{stats.pages} pages, {stats.new_pages} new ({stats.new_bytes >> 10} KiB), "
            f"{result.seconds * 1000:.1f} ms\n"
        )
        self.print_to.flush()

    def _on_finding(self, session: int, finding: Finding) -> None:
        """A transport finding (the relay saw it; the messages alone do not show it)."""
        self.writer.write(FindingRecord(session, finding))
        self._count(session, finding)
        if self.print_to is not None:
            self.print_to.write(f"{'':6} {'':11} {session:2} finding {finding}\n")
            self.print_to.flush()

    def _count(self, session: int, finding: Finding) -> None:
        if finding.severity is Severity.ERROR:
            self.stats.errors += 1
        else:
            self.stats.warnings += 1
        if self.on_finding is not None:
            self.on_finding(session, finding)


def now_ns() -> tuple[int, int]:
    """(monotonic, wall) nanoseconds, taken together."""
    return time.monotonic_ns(), time.time_ns()
