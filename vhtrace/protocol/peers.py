"""Who the peers of a session are, from what the recorder wrote down about them (pure).

Some findings depend on the peer: QEMU's back-end channel refuses requests the spec
defines, and QEMU sends an fd the spec says it should not. The recorder already notes
each side's program (``/proc/<pid>/exe`` of the SO_PEERCRED pid) and, for QEMU, the device
type read off its command line, in the session-start event; this module turns that into
the session context the conversation takes, without touching the recorder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from vhtrace.protocol import spec

_QEMU_PROGRAMS = ("qemu-system-", "qemu-kvm")
"""Program names of QEMU system emulators (Debian: qemu-system-x86_64; RHEL: qemu-kvm)."""


def frontend_of(info: object) -> str | None:
    """``spec.FRONTEND_QEMU`` when a session-start event's info says QEMU was the
    front-end, else None (unknown: nothing peer-specific is checked)."""
    if not isinstance(info, Mapping):
        return None
    frontend = info.get("frontend")
    program = frontend.get("program") if isinstance(frontend, Mapping) else None
    if not isinstance(program, str):
        return None
    name = os.path.basename(program)
    if name.startswith(_QEMU_PROGRAMS):
        return spec.FRONTEND_QEMU
    return None
