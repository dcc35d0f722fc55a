"""Snapshots during ``vhtrace record``: the recorder thread's side of it.

The recorder calls :meth:`MemoryRecorder.before` for each message before it
analyses it (``before:NAME`` snapshots see the state the back-end is in when
the message reaches it), then :meth:`MemoryRecorder.after` with the analysis:
this keeps the memory fds the message carries (regions, the inflight area, the
dirty log), drops the ones it replaces, and takes the snapshots its triggers
call for. Timers and SIGUSR1 come through :meth:`tick` and :meth:`on_demand`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vhtrace.analysis import AnalysedMessage
from vhtrace.memory import triggers as trig
from vhtrace.memory.access import SessionMemory
from vhtrace.memory.capture import SnapshotOptions, SnapshotResult, Snapshotter
from vhtrace.memory.hold import DEFAULT_HOLD_SECONDS, Hold
from vhtrace.memory.plan import DEFAULT_BUFFER_LIMIT
from vhtrace.memory.store import PageIndex
from vhtrace.protocol.conversation import Conversation
from vhtrace.protocol.effects import AreaPassed, MemoryReplaced, RegionAdded, RegionRemoved
from vhtrace.protocol.findings import Finding, Severity
from vhtrace.protocol.spec import Channel
from vhtrace.trace.records import MessageRecord
from vhtrace.trace.writer import TraceWriter

SEVERITIES = {"inflight-batch-head": Severity.ERROR}
"""Snapshot finding codes that are errors; the others are warnings."""
MAX_FINDINGS = 16
"""Findings written per snapshot at most (the snapshot record keeps more)."""


_AREA_NAMES = {"inflight": "inflight area", "log": "dirty log"}
"""AreaPassed.area in the words of snapshot findings."""


@dataclass
class SnapshotConfig:
    """What ``vhtrace record --snapshot/--memory`` asked for."""

    triggers: trig.Triggers = field(default_factory=lambda: trig.parse(trig.DEFAULT))
    mode: str = "rings"
    hold_seconds: float = DEFAULT_HOLD_SECONDS
    buffer_limit: int = DEFAULT_BUFFER_LIMIT
    index_capacity: int | None = None

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def describe(self) -> dict[str, Any]:
        return {
            "snapshot": str(self.triggers),
            "memory": self.mode,
            "snapshot_hold_ms": int(self.hold_seconds * 1000),
        }


Report = Callable[[int, Finding], None]
"""Where findings go: (session, finding)."""
Announce = Callable[[int, int, str, SnapshotResult], None]
"""Told about each snapshot taken: (session, seq, trigger, result)."""


class MemoryRecorder:
    """Keeps each session's memory fds and takes the snapshots the triggers call for."""

    def __init__(
        self,
        config: SnapshotConfig,
        writer: TraceWriter,
        report: Report,
        conversation: Callable[[int], Conversation],
        announce: Announce | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.report = report
        self.announce = announce
        self._conversation = conversation
        index = PageIndex(config.index_capacity) if config.index_capacity else PageIndex()
        self.snapshotter = Snapshotter(
            writer, SnapshotOptions(config.mode, config.buffer_limit), index
        )
        self.sessions: dict[int, SessionMemory] = {}
        self.taken = 0
        """Snapshots written so far."""
        every = config.triggers.every
        self._next_tick = time.monotonic() + every if every else None

    # -- messages ------------------------------------------------------------------------

    def before(self, record: MessageRecord, hold: Hold | None) -> None:
        """Before the message is analysed: a before:NAME snapshot, then release the relay."""
        request, flags, _ = record.header
        trigger = trig.before(self.config.triggers, record.channel, record.sender, request, flags)
        if trigger is None:
            if hold is not None:
                hold.release()
            return
        extra = {
            "request": trigger.partition(":")[2],
            "role": "request",
            "message_mono_ns": record.mono_ns,
        }
        self._snapshot(record.session, trigger, record.seq, extra, hold)

    def after(
        self, item: AnalysedMessage, fds: list[int], metas: list[dict[str, Any]], kept: set[int]
    ) -> None:
        """After the analysis: keep memory fds, fire triggers.

        The positions of the fds taken over are added to ``kept`` before they are
        used, so the caller closes exactly the others, even if this raises."""
        record, analysis = item.record, item.analysis
        self._apply(record, item, fds, metas, kept)
        conversation = self._conversation(record.session)
        owed = any(p.seq == record.seq for p in conversation.pending[analysis.channel])
        for trigger, ring in trig.after(
            self.config.triggers, analysis, item.wire.request, conversation.state, owed
        ):
            extra: dict[str, Any] = {
                "request": analysis.name,
                "role": str(analysis.role),
                "message_mono_ns": record.mono_ns,
            }
            if ring is not None:
                extra["ring"] = ring
            self._snapshot(record.session, trigger, record.seq, extra)

    def _apply(
        self,
        record: MessageRecord,
        item: AnalysedMessage,
        fds: list[int],
        metas: list[dict[str, Any]],
        kept: set[int],
    ) -> None:
        analysis = item.analysis
        fields = analysis.fields
        if analysis.channel is not Channel.MAIN or fields is None:
            return
        name = analysis.name
        memory = self.sessions.get(record.session)
        problems: list[str] = []

        def session_memory() -> SessionMemory:
            nonlocal memory
            if memory is None:
                memory = self.sessions[record.session] = SessionMemory()
            return memory

        for effect in analysis.effects:
            if isinstance(effect, MemoryReplaced):
                table = session_memory()
                table.clear_regions()
                for position, region in enumerate(fields.get("regions", ())):
                    fd = fds[position] if position < len(fds) else None
                    meta = metas[position] if position < len(metas) else None
                    if fd is not None:
                        kept.add(position)
                    problem = table.add_region(region, fd, record.seq, meta)
                    if problem:
                        problems.append(
                            f"region {position} (gpa 0x{region['guest_phys_addr']:x}): {problem}"
                        )
            elif isinstance(effect, RegionAdded) and effect.fd is not None and fds:
                kept.add(effect.fd)
                problem = session_memory().add_region(
                    fields, fds[effect.fd], record.seq, metas[effect.fd]
                )
                if problem:
                    problems.append(f"region gpa 0x{fields['guest_phys_addr']:x}: {problem}")
            elif isinstance(effect, RegionRemoved) and memory is not None:
                memory.remove_region(fields)
            elif isinstance(effect, AreaPassed) and len(fds) > effect.fd:
                kept.add(effect.fd)
                problem = session_memory().set_area(effect.area, fields, fds[effect.fd], record.seq)
                if problem:
                    problems.append(f"{_AREA_NAMES[effect.area]}: {problem}")
        for text in problems:
            self.report(
                record.session, Finding(record.seq, name, "snapshot-map", text, Severity.WARNING)
            )

    # -- snapshots -------------------------------------------------------------------------

    def _snapshot(
        self, session: int, trigger: str, seq: int, extra: dict[str, Any], hold: Hold | None = None
    ) -> SnapshotResult:
        memory = self.sessions.get(session) or SessionMemory()
        conversation = self._conversation(session)
        mono, wall = time.monotonic_ns(), time.time_ns()

        def commit(info: dict[str, Any]) -> None:
            """Pages are captured: the held message may go now; was it still held?"""
            if hold is not None:
                info["held"] = True
                info["exact"] = hold.release()

        try:
            result = self.snapshotter.take(
                session, memory, conversation.state, trigger, seq, mono, wall, extra, commit
            )
        finally:
            if hold is not None and not hold.done:
                hold.release()
        if hold is not None and hold.expired:
            self.report(
                session,
                Finding(
                    seq,
                    "",
                    "snapshot-hold",
                    f"snapshot {result.snapshot} ({trigger}): the relay "
                    "stopped waiting for it; the back-end may have seen "
                    "the message first",
                    Severity.WARNING,
                ),
            )
        for code, text in result.problems[:MAX_FINDINGS]:
            self.report(
                session,
                Finding(
                    seq or None,
                    "",
                    code,
                    f"snapshot {result.snapshot} ({trigger}): {text}",
                    SEVERITIES.get(code, Severity.WARNING),
                ),
            )
        self.taken += 1
        if self.announce is not None:
            self.announce(session, seq, trigger, result)
        return result

    def tick(self, now: float | None = None) -> None:
        """Called often by the recorder loop: every:SECONDS snapshots."""
        if self._next_tick is None:
            return
        now = time.monotonic() if now is None else now
        if now < self._next_tick:
            return
        every = self.config.triggers.every or 1.0
        self._next_tick = max(self._next_tick + every, now)
        self.on_demand("every")

    def on_demand(self, trigger: str) -> None:
        """A snapshot of every session that has memory (SIGUSR1, timers)."""
        for session in sorted(self.sessions):
            self._snapshot(session, trigger, 0, {})

    def session_ended(self, session: int) -> None:
        memory = self.sessions.pop(session, None)
        if memory is not None:
            memory.close()
        self.snapshotter.forget(session)

    def close(self) -> None:
        for session in list(self.sessions):
            self.session_ended(session)


def close_unkept(fds: list[int], kept: set[int]) -> None:
    for position, fd in enumerate(fds):
        if position not in kept:
            os.close(fd)
