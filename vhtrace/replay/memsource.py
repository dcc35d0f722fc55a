"""Where the contents of a replayed memory fd come from: the hook for memory snapshots.

A recorded memfd (guest RAM, an inflight area) is re-created with its recorded size.
What goes in it is a :class:`MemorySource`'s answer: the bytes the trace's memory
snapshot holds for that fd as it was when message N passed it, or None for
zero-filled memory. Traces do not hold snapshots yet (format version 2 will), so the
only source today is :class:`NoSnapshots`; a snapshot reader plugs in here without
replay changing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class MemorySource(Protocol):
    """Contents of a recorded memory fd at a message, or None (zero-filled)."""

    def contents(
        self, seq: int, index: int, meta: dict[str, Any], fields: dict[str, Any] | None
    ) -> Iterable[tuple[int, bytes]] | None:
        """(file offset, bytes) pieces to write into fd number ``index`` of message ``seq``
        before it is passed on. ``meta`` is the fd's recorded metadata, ``fields`` the
        message's decoded payload (a region's ``guest_phys_addr`` and ``mmap_offset`` map
        guest-physical snapshot pages to file offsets)."""
        ...


class NoSnapshots:
    """No memory recorded: every replayed memory fd starts zero-filled."""

    def contents(
        self, seq: int, index: int, meta: dict[str, Any], fields: dict[str, Any] | None
    ) -> Iterable[tuple[int, bytes]] | None:
        return None
