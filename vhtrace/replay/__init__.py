"""Replay a recorded vhost-user conversation against a live peer, and say where it diverged.

Two ways round:

* :func:`replay_frontend` plays the recorded front-end (QEMU) against a live back-end:
  a back-end's CI gets QEMU's exact conversation without QEMU;
* :func:`serve_backend` plays the recorded back-end to a live front-end: a mock
  back-end made from a trace, for front-end CI without the real back-end.

How the pieces fit (the protocol logic is pure, the I/O is at the edges):

    trace ─▶ analysis (protocol model) ─▶ plan: steps, ours or theirs, with dependencies
                                                │
    rules (what not to compare) ─▶ compare ◀─ player: what to send next, is this the
                                                │     expected message?   (pure)
    live peer ◀──▶ links, fds, live conversation ◀─ session loop            (I/O)
                                                │
                                     report: divergences, checks; text, JSON, JUnit

Memory fds are re-created zero-filled at their recorded size until traces carry memory
snapshots; :class:`~vhtrace.replay.memsource.MemorySource` is the hook for them.
"""

from vhtrace.replay.backend import serve_backend
from vhtrace.replay.frontend import replay_frontend
from vhtrace.replay.memsource import MemorySource, NoSnapshots
from vhtrace.replay.options import ReplayInputError, ReplayOptions
from vhtrace.replay.report import Divergence, ReplayResult

__all__ = [
    "Divergence",
    "MemorySource",
    "NoSnapshots",
    "ReplayInputError",
    "ReplayOptions",
    "ReplayResult",
    "replay_frontend",
    "serve_backend",
]
