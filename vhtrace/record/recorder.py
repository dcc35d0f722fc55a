"""The recorder thread: everything that is not relaying happens here.

The relay hands over what crossed the wire (bytes, dups of the fds, times)
through a queue and never waits: fd metadata, protocol analysis, live
printing and the trace writer all run on this side. If the queue holds more
than ``MAX_QUEUED_BYTES`` (a disk far too slow, or a flood), further records
are dropped and counted rather than stalling the guest; the loss is recorded
as a finding.

If the recorder itself fails (a full disk), it closes every fd still queued for
it, refuses further items (``accepting`` turns False, so the relay stops making
dups for it) and says, on stderr, in the summary and in the trace's end record if
the disk still takes it, from which message on nothing was recorded.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from vhtrace import fdinfo, render
from vhtrace.analysis import Analyser
from vhtrace.memory.capture import SnapshotResult
from vhtrace.memory.hold import Hold
from vhtrace.memory.recording import MemoryRecorder, SnapshotConfig, close_unkept
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.trace.records import EventRecord, MessageRecord
from vhtrace.trace.writer import TraceWriter

MAX_QUEUED_BYTES = 256 << 20
POLL_INTERVAL = 0.05


@dataclass
class RecorderStats:
    messages: Counter[str] = field(default_factory=Counter)
    """Messages per channel."""
    stream_bytes: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
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
            f"{counted(total, 'message')} ({per_channel}), {counted(self.sessions, 'session')}, "
            f"{findings} ({counted(self.errors, 'error')}, {counted(self.warnings, 'warning')})"
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
            "errors": self.errors,
            "warnings": self.warnings,
            "dropped": self.dropped,
        } | (
            {"failed": self.failed, "unrecorded_from": self.unrecorded_from} if self.failed else {}
        )


class Recorder(threading.Thread):
    """Consumes what the relay saw and writes the trace."""

    def __init__(
        self,
        writer: TraceWriter,
        device: Any = None,
        print_to: TextIO | None = None,
        on_finding: Callable[[int, Finding], None] | None = None,
        snapshots: SnapshotConfig | None = None,
    ) -> None:
        super().__init__(name="vhtrace-recorder", daemon=True)
        self.writer = writer
        self.analyser = Analyser(device)
        self.print_to = print_to
        self.on_finding = on_finding
        self.stats = RecorderStats()
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._queued = 0
        self._lock = threading.Lock()
        self._dropped_since_report = 0
        self.error: BaseException | None = None
        self._dead = False
        """The thread stopped: nothing more is queued, fds handed over are closed."""
        self._last_seq = 0
        self._current_seq: int | None = None
        self.memory: MemoryRecorder | None = None
        """Shared-memory snapshots (None with --memory=none)."""
        if snapshots is not None and snapshots.active:
            self.memory = MemoryRecorder(snapshots, writer, self._on_finding,
                                         self.analyser.conversation, self._announce)  # fmt: skip

    # -- relay side (never blocks) ---------------------------------------------

    @property
    def accepting(self) -> bool:
        """False once the recorder thread has failed: hand it no more fds."""
        return not self._dead

    def submit(self, item: tuple[Any, ...], size: int = 0, fds: list[int] | None = None) -> bool:
        """Queue an item for the recorder thread; False if it was dropped (queue full, or
        the recorder failed: then the fds are closed here)."""
        with self._lock:
            if self._dead or (size and self._queued + size > MAX_QUEUED_BYTES):
                if not self._dead:
                    self.stats.dropped += 1
                    self._dropped_since_report += 1
                for fd in fds or ():
                    os.close(fd)
                _release_hold(item)
                return False
            self._queued += size
            self._queue.put(item)
        return True

    def stop(self, summary_extra: dict[str, Any] | None = None) -> None:
        self._queue.put(("stop", summary_extra or {}))

    def request_snapshot(self, trigger: str = "signal") -> None:
        """A snapshot of every session now (safe from a signal handler: SimpleQueue.put)."""
        self._queue.put(("snapshot", trigger))

    # -- recorder side ----------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a failed write must be loud, not silent
            self.error = exc
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        """Release everything queued (fds, holds), say from where on nothing was recorded."""
        with self._lock:
            self._dead = True
            items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._queued = 0
        for item in items:
            _discard(item)
        lost = self._current_seq if self._current_seq is not None else self._last_seq + 1
        self.stats.failed = str(exc) or type(exc).__name__
        self.stats.unrecorded_from = lost
        print(f"vhtrace: recording failed: {exc}; nothing recorded from message #{lost} on",
              file=sys.stderr)  # fmt: skip
        with contextlib.suppress(BaseException):  # the trace's end says so, if the disk takes it
            self.writer.close(self.stats.as_dict())

    def _loop(self) -> None:
        writer = self.writer
        while True:
            try:
                item = self._queue.get(timeout=POLL_INTERVAL)
            except queue.Empty:
                self._tick()
                writer.maybe_flush()
                continue
            kind = item[0]
            if kind == "stop":
                if self.memory is not None:
                    self.memory.close()
                summary = self.stats.as_dict()
                summary.update(item[1])
                writer.close(summary)
                return
            handler = getattr(self, "_on_" + kind)
            self._current_seq = item[1] if kind in ("message", "stream") else None
            handler(*item[1:])  # closes the item's fds, even when it fails
            if self._current_seq is not None:
                self._last_seq = max(self._last_seq, self._current_seq)
            self._current_seq = None
            if self._dropped_since_report:
                self._report_drops()
            self._tick()
            writer.maybe_flush()

    def _tick(self) -> None:
        if self.memory is not None:
            self._guarded(0, self.memory.tick)

    def _release(self, size: int) -> None:
        with self._lock:
            self._queued -= size

    def _describe(self, fds: list[int], extra: list[dict[str, Any] | None],
                  close: bool = True) -> list[dict[str, Any]]:  # fmt: skip
        metas = []
        for index, fd in enumerate(fds):
            meta = fdinfo.describe(fd)
            if index < len(extra) and extra[index]:
                meta.update(extra[index] or {})
            metas.append(meta)
            if close:
                os.close(fd)
        return metas

    def _on_message(self, seq: int, mono: int, wall: int, session: int, channel: str, sender: str,
                    raw: bytes, fds: list[int], flags: int, extra: list[dict[str, Any] | None],
                    hold: Hold | None = None) -> None:  # fmt: skip
        memory = self.memory
        metas = self._describe(fds, extra, close=memory is None)
        self._release(len(raw))
        record = MessageRecord(seq, mono, wall, session, channel, sender, raw, tuple(metas), flags)
        kept: set[int] = set()
        try:
            if memory is not None:
                self._guarded(session, memory.before, record, hold)
            self.writer.message(seq, mono, wall, session, channel, sender, raw, metas, flags)
            self.stats.messages[channel] += 1
            item = self.analyser.message(record)
            for finding in item.analysis.findings:
                self._count(session, finding)
            if self.print_to is not None:
                lines = [render.message_line(self.writer.header, item)]
                lines += render.finding_lines(item.analysis.findings)
                self.print_to.write("\n".join(lines) + "\n")
                self.print_to.flush()
            if memory is not None:
                self._guarded(session, memory.after, item, fds, metas, kept)
        finally:
            if hold is not None and not hold.done:
                hold.release()
            if memory is not None:
                close_unkept(fds, kept)

    def _on_snapshot(self, trigger: str) -> None:
        if self.memory is not None:
            self._guarded(0, self.memory.on_demand, trigger)

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

    def _on_stream(self, seq: int, mono: int, wall: int, session: int, channel: str, sender: str,
                   data: bytes, fds: list[int]) -> None:  # fmt: skip
        metas = self._describe(fds, [])
        self._release(len(data))
        self.writer.stream(seq, mono, wall, session, channel, sender, data, tuple(metas))
        self.stats.stream_bytes[channel] += len(data)

    def _on_event(self, mono: int, wall: int, session: int, event: str,
                  info: dict[str, Any]) -> None:  # fmt: skip
        self.writer.event(mono, wall, session, event, info)
        if event == "session-start":
            self.stats.sessions += 1
        elif event in ("session-end", "session-failed") and self.memory is not None:
            self._guarded(session, self.memory.session_ended, session)
        record = EventRecord(mono, wall, session, event, info)
        for item in self.analyser.feed(record):
            for finding in getattr(item, "findings", ()):
                self._count(session, finding)  # late findings: show derives them again
        if self.print_to is not None:
            self.print_to.write(render.event_line(self.writer.header, record) + "\n")
            self.print_to.flush()

    def _on_finding(self, session: int, finding: Finding) -> None:
        """A transport finding (the relay saw it; the messages alone do not show it)."""
        self.writer.finding(session, finding)
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

    def _report_drops(self) -> None:
        with self._lock:
            count, self._dropped_since_report = self._dropped_since_report, 0
        finding = Finding(None, "", "records-dropped",
                          f"{count} records dropped: the trace writer could not keep up "
                          f"({MAX_QUEUED_BYTES >> 20} MiB queued)")  # fmt: skip
        self.writer.finding(0, finding)


def _release_hold(item: tuple[Any, ...]) -> None:
    if item and item[0] == "message" and len(item) > 11 and item[11] is not None:
        hold = item[11]
        if not hold.done:
            hold.release()


def _discard(item: tuple[Any, ...]) -> None:
    """A queued item that will never be recorded: close its fds, let its hold go."""
    if item and item[0] in ("message", "stream") and len(item) > 8:
        for fd in item[8]:
            with contextlib.suppress(OSError):
                os.close(fd)
    _release_hold(item)


def now_ns() -> tuple[int, int]:
    """(monotonic, wall) nanoseconds, taken together."""
    return time.monotonic_ns(), time.time_ns()
