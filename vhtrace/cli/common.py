"""What every verb shares: exit codes, opening traces, errors on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from vhtrace.trace.reader import TraceError, TraceReader

EXIT_OK = 0
EXIT_FOUND = 1
"""A divergence or a failure was found (replay diverged, --fail-on matched)."""
EXIT_BAD_INPUT = 2
"""Bad input or usage: unreadable or truncated trace, wrong options."""


class UsageError(Exception):
    """A wrong option value: reported in one line, exit 2."""


def warn(text: str) -> None:
    print(f"vhtrace: {text}", file=sys.stderr)


def fail(text: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    warn(text)
    raise SystemExit(code)


def open_trace(
    path: str, *, follow: bool = False, on_idle: Callable[[], None] | None = None
) -> TraceReader:
    try:
        return TraceReader(sys.stdin.buffer if path == "-" else path, follow=follow,
                           on_idle=on_idle)  # fmt: skip
    except TraceError as exc:
        fail(str(exc))


def report_damage(reader: TraceReader) -> int:
    """Warn about a trace that ended early; the exit code it deserves."""
    if reader.problem is None:
        return EXIT_OK
    warn(f"{reader.path}: {reader.problem} ({reader.records} records read)")
    return EXIT_BAD_INPUT
