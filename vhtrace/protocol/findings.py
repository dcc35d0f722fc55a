"""Findings: what vhtrace has to say about a message, as data.

A finding never stops anything: a malformed message is still a message that
is relayed, recorded and shown; it just carries findings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.StrEnum):
    ERROR = "error"
    """The message breaks the spec (or would break a known implementation)."""
    WARNING = "warning"
    """Allowed, but suspicious: often the first sign of a bug."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with a message, saying where and what."""

    seq: int | None
    """Number of the message it is about (None: about the connection)."""
    request: str
    """Name of the request the message is or answers."""
    code: str
    """Short stable identifier, for filtering and tests (e.g. ``fd-count``)."""
    text: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"#{self.seq} " if self.seq is not None else ""
        what = f"{self.request}: " if self.request else ""
        return f"{where}{what}{self.text}"

    def to_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "request": self.request,
            "code": self.code,
            "severity": str(self.severity),
            "text": self.text,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Finding:
        seq = data.get("seq")
        return cls(
            seq=int(seq) if isinstance(seq, int) else None,
            request=str(data.get("request", "")),
            code=str(data.get("code", "")),
            text=str(data.get("text", "")),
            severity=Severity(str(data.get("severity", "error"))),
        )
