"""A message the relay holds back until the recorder has taken a snapshot before it.

Only ``before:NAME`` snapshots hold anything. The relay keeps the message (and
stops reading that one endpoint: other endpoints and sessions go on), hands the
recorder a :class:`Hold` with it, and forwards the message when the recorder
releases the hold or when the deadline passes, whichever comes first. Either
side may act first; the lock makes the outcome a single, consistent one: the
snapshot is *exact* if and only if it was released before it expired.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

DEFAULT_HOLD_SECONDS = 1.0


class Hold:
    """Shared by the relay (expire) and the recorder (release)."""

    __slots__ = ("_lock", "_wake", "deadline", "expired", "released")

    def __init__(self, deadline: float, wake: Callable[[], None]) -> None:
        self.deadline = deadline
        """time.monotonic() after which the relay forwards anyway."""
        self._wake = wake
        self._lock = threading.Lock()
        self.released = False
        self.expired = False

    def release(self) -> bool:
        """Recorder: the snapshot is written. True if the message was still held."""
        with self._lock:
            if self.expired:
                return False
            self.released = True
        self._wake()
        return True

    def expire(self) -> bool:
        """Relay: the deadline passed. True if the recorder had not released it yet."""
        with self._lock:
            if self.released:
                return False
            self.expired = True
            return True

    @property
    def done(self) -> bool:
        return self.released or self.expired
