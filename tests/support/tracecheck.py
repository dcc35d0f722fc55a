"""Reading a recorded trace back in system tests: analysed items and simple queries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhtrace.analysis import AnalysedMessage, Item, LateFindings, analyser_for
from vhtrace.protocol.findings import Finding
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EventRecord


@dataclass
class Trace:
    header: dict[str, Any]
    items: list[Item]
    problem: str | None

    @classmethod
    def read(cls, path: Path) -> Trace:
        with TraceReader(path) as reader:
            items = list(analyser_for(reader.header).run(reader))
            return cls(reader.header, items, reader.problem)

    @property
    def messages(self) -> list[AnalysedMessage]:
        return [i for i in self.items if isinstance(i, AnalysedMessage)]

    def named(self, name: str, role: str = "request", channel: str | None = None
              ) -> list[AnalysedMessage]:  # fmt: skip
        return [
            m for m in self.messages
            if m.analysis.name == name and m.analysis.role == role
            and (channel is None or m.record.channel == channel)
        ]  # fmt: skip

    def events(self, name: str | None = None) -> list[EventRecord]:
        return [i for i in self.items if isinstance(i, EventRecord)
                and (name is None or i.event == name)]  # fmt: skip

    def findings(self, severity: str | None = None) -> list[Finding]:
        found = [f for m in self.messages for f in m.analysis.findings]
        found += [f for i in self.items if isinstance(i, LateFindings) for f in i.findings]
        return [f for f in found if severity is None or f.severity == severity]

    def sessions(self) -> list[int]:
        return sorted({e.session for e in self.events("session-start")})
