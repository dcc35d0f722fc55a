"""The end-of-connection report: what the front-end did wrong and what it failed to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vhtrace.protocol.findings import Finding, Severity

MAX_VIOLATIONS = 10_000


@dataclass
class Report:
    """Findings on the front-end's messages, expectation results, and our own trouble."""

    messages: int = 0
    violations: list[Finding] = field(default_factory=list)
    """Findings on what the front-end sent (requests, acks, back-end channel replies)."""
    own: list[Finding] = field(default_factory=list)
    """Findings on what the mock sent (expected when faults are injected)."""
    expectation_failures: list[str] = field(default_factory=list)
    unused_faults: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Requests refused, rings that broke, the mock's own trouble."""
    script_errors: list[str] = field(default_factory=list)
    """The script's handlers, hooks or expectations that raised (file, line, error)."""
    closed_by: str = ""
    violations_not_kept: int = 0
    """Violations beyond :data:`MAX_VIOLATIONS`, counted but not kept."""

    def add_violation(self, finding: Finding) -> None:
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(finding)
        else:
            self.violations_not_kept += 1

    @property
    def errors_found(self) -> list[Finding]:
        return [f for f in self.violations if f.severity is Severity.ERROR]

    def ok(self, fail_on_violations: bool = False) -> bool:
        if self.expectation_failures or self.script_errors:
            return False
        return not (fail_on_violations and self.errors_found)

    def render(self) -> str:
        lines = [f"mockbackend: {self.messages} messages; connection {self.closed_by or 'ended'}"]
        if self.violations_not_kept:
            lines.append(f"({self.violations_not_kept} more violations not kept)")
        for title, items in (
            ("front-end violations", [str(f) for f in self.violations]),
            ("expectations not met", self.expectation_failures),
            ("faults never triggered", self.unused_faults),
            ("script errors", self.script_errors),
            ("errors", self.errors),
        ):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines += [f"  {item}" for item in items]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "violations": [f.to_dict() for f in self.violations],
            "own": [f.to_dict() for f in self.own],
            "expectation_failures": self.expectation_failures,
            "unused_faults": self.unused_faults,
            "errors": self.errors,
            "script_errors": self.script_errors,
            "closed_by": self.closed_by,
            "violations_not_kept": self.violations_not_kept,
        }
