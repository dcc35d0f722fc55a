"""Where a script's code raised, in one line (for the report and the CLI).

A leaf: the connection context reports the hooks and handlers that raise with it, and
:func:`mockbackend.script.load_script_file` the script files that do not load.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

from mockbackend.faults import UnknownRequest
from vhtrace.protocol import spec

_OWN_DIRS = tuple(os.path.dirname(os.path.abspath(p)) + os.sep for p in (__file__, spec.__file__))
"""mockbackend/ and vhtrace/protocol/: frames there are not the script's."""


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, UnknownRequest):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_exception(exc: BaseException, path: Path | str | None = None) -> str:
    """``FILE, line N: Error: text`` for an exception raised by script code.

    The line is the last one in ``path`` (when given), else the innermost one outside
    mockbackend's own code, else the innermost one."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}, line {exc.lineno}: SyntaxError: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    chosen = None
    if path is not None:
        wanted = os.path.abspath(path)
        mine = [f for f in frames if os.path.abspath(f.filename) == wanted]
        chosen = mine[-1] if mine else None
    if chosen is None:
        theirs = [f for f in frames if not os.path.abspath(f.filename).startswith(_OWN_DIRS)]
        chosen = theirs[-1] if theirs else (frames[-1] if frames else None)
    if chosen is None:
        return f"{path}: {_error_text(exc)}" if path is not None else _error_text(exc)
    return f"{chosen.filename}, line {chosen.lineno}: {_error_text(exc)}"
