"""Which pages the trace already holds: the recorder's bounded page index.

A page is stored the first time its hash is seen; after that only its hash is
written. The index must not grow with the guest's memory forever, so it keeps
two generations of hashes: when the young one is full it becomes the old one
and the oldest is forgotten; a hash found in the old generation moves back to
the young one. Forgetting only costs space (the page is stored again, readers
keep the last copy of a hash); it never loses data.
"""

from __future__ import annotations

DEFAULT_CAPACITY = 4 << 20
"""Hashes remembered (about 16 GiB of distinct pages, a few hundred MB of index)."""


class PageIndex:
    """Remembers page hashes, at most ``capacity`` of them (approximately LRU)."""

    __slots__ = ("_half", "_old", "_young", "forgotten")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self._half = capacity // 2
        self._young: set[bytes] = set()
        self._old: set[bytes] = set()
        self.forgotten = 0
        """Hashes dropped so far (their pages may be stored again)."""

    def remember(self, digest: bytes) -> bool:
        """Note a hash; True if it was already known (the page is stored)."""
        young = self._young
        if digest in young:
            return True
        known = digest in self._old
        if known:
            self._old.discard(digest)
        if len(young) >= self._half:
            self.forgotten += len(self._old)
            self._old = young
            young = self._young = set()
        young.add(digest)
        return known

    def __contains__(self, digest: object) -> bool:
        return digest in self._young or digest in self._old

    def __len__(self) -> int:
        return len(self._young) + len(self._old)
