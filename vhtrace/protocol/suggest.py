"""'did you mean' for misspelt request names (``show -r``, mockbackend scripts)."""

from __future__ import annotations

import difflib

from vhtrace.protocol import spec

ALL_NAMES: list[str] = sorted(
    {row.name for row in spec.FRONTEND_REQUESTS}
    | {"BACKEND_" + row.name for row in spec.BACKEND_REQUESTS}
)
"""Every request name as ``show`` displays it (back-end channel ones with BACKEND_)."""


def close_request_names(name: str, n: int = 3) -> list[str]:
    """Known request names close to ``name`` (best first; empty if none is close)."""
    key = name.strip().upper().removeprefix("VHOST_USER_")
    return difflib.get_close_matches(key, ALL_NAMES, n=n)


def did_you_mean(name: str) -> str:
    """`` (did you mean A, B?)`` for a misspelt request name, or ``""``."""
    close = close_request_names(name)
    return f" (did you mean {', '.join(close)}?)" if close else ""
