"""Pages, their hashes, and page maps: what a snapshot says about a range of memory.

Pure: bytes in, hashes and maps out.

A page is 4 KiB. A non-zero page is named by its content hash (BLAKE2b, 16 bytes)
and stored once per trace; a zero page is never stored. A *page map* says, page
by page, what an extent of memory held. It is a run list, because memory is
mostly long runs of zero pages:

* absolute map: ``int n > 0`` = n zero pages; ``bytes`` = concatenated 16-byte
  hashes, one per page;
* delta map (against an earlier absolute map of the same extent): the same
  items plus ``int n < 0`` = -n pages unchanged since that map.

An unchanged re-snapshot of a gigabyte is then a single ``-262144``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

PAGE_SIZE = 4096
PAGE_SHIFT = 12
HASH_SIZE = 16
ZERO_PAGE = bytes(PAGE_SIZE)
CHUNK_PAGES = 256
"""Pages compared against zero in one go before looking at them one by one."""
ZERO_CHUNK = bytes(PAGE_SIZE * CHUNK_PAGES)

MapItem = int | bytes
PageMap = list[MapItem]


def page_hash(page: bytes | memoryview) -> bytes:
    """The name of a page's content (16-byte BLAKE2b: collisions would merge pages)."""
    return hashlib.blake2b(page, digest_size=HASH_SIZE).digest()


def pages_spanning(start: int, length: int) -> tuple[int, int]:
    """(first page address, page count) of the pages that hold [start, start+length)."""
    if length <= 0:
        return start & ~(PAGE_SIZE - 1), 0
    first = start & ~(PAGE_SIZE - 1)
    end = (start + length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    return first, (end - first) >> PAGE_SHIFT


class MapBuilder:
    """Builds an absolute page map page by page (or run by run), merging runs."""

    __slots__ = ("_blob", "items", "pages")

    def __init__(self) -> None:
        self.items: PageMap = []
        self._blob = bytearray()
        self.pages = 0

    def zeros(self, count: int) -> None:
        if count <= 0:
            return
        self._flush()
        items = self.items
        if items and isinstance(items[-1], int):
            items[-1] += count
        else:
            items.append(count)
        self.pages += count

    def hash(self, digest: bytes) -> None:
        self._blob += digest
        self.pages += 1

    def hashes(self, blob: bytes) -> None:
        self._blob += blob
        self.pages += len(blob) // HASH_SIZE

    def _flush(self) -> None:
        if self._blob:
            self.items.append(bytes(self._blob))
            self._blob.clear()

    def finish(self) -> PageMap:
        self._flush()
        return self.items


class PageSink:
    """Where the pages of a scan go: told about every non-zero page and its hash."""

    def offer(self, digest: bytes, page: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def scan(data: bytes, builder: MapBuilder, sink: PageSink) -> int:
    """Classify ``data`` (a whole number of pages) into ``builder``; the non-zero page count.

    Zero chunks are recognised by one comparison; only chunks holding data are
    looked at page by page."""
    nonzero = 0
    length = len(data)
    chunk_bytes = PAGE_SIZE * CHUNK_PAGES
    for start in range(0, length, chunk_bytes):
        chunk = data[start : start + chunk_bytes] if length > chunk_bytes else data
        size = len(chunk)
        if chunk == (ZERO_CHUNK if size == chunk_bytes else ZERO_CHUNK[:size]):
            builder.zeros(size >> PAGE_SHIFT)
            continue
        for offset in range(0, size, PAGE_SIZE):
            page = chunk[offset : offset + PAGE_SIZE]
            if page == ZERO_PAGE:
                builder.zeros(1)
            else:
                digest = page_hash(page)
                sink.offer(digest, page)
                builder.hash(digest)
                nonzero += 1
    return nonzero


# -- reading maps --------------------------------------------------------------------


def map_pages(items: Iterable[MapItem]) -> int:
    """How many pages a map (absolute or delta) covers."""
    total = 0
    for item in items:
        total += abs(item) if isinstance(item, int) else len(item) // HASH_SIZE
    return total


def iter_hashes(items: Iterable[MapItem]) -> Iterator[tuple[int, bytes]]:
    """(page index, hash) of every non-zero page of an absolute map."""
    index = 0
    for item in items:
        if isinstance(item, int):
            index += item
            continue
        blob: bytes = item
        for offset in range(0, len(blob), HASH_SIZE):
            yield index, blob[offset : offset + HASH_SIZE]
            index += 1


def hash_at(items: Sequence[MapItem], page: int) -> bytes | None:
    """The hash of one page of an absolute map (None: a zero page). IndexError past the end."""
    index = 0
    for item in items:
        if isinstance(item, int):
            if page < index + item:
                return None
            index += item
        else:
            blob: bytes = item
            count = len(blob) // HASH_SIZE
            if page < index + count:
                at = (page - index) * HASH_SIZE
                return blob[at : at + HASH_SIZE]
            index += count
    raise IndexError(page)


def check_map(items: Sequence[object], delta: bool) -> str | None:
    """Why a map read from a trace is malformed, or None."""
    for item in items:
        if type(item) is int:
            if item == 0 or (item < 0 and not delta):
                return f"bad run {item}"
        elif isinstance(item, bytes):
            if not item or len(item) % HASH_SIZE:
                return f"hash blob of {len(item)} bytes"
        else:
            return f"unexpected {type(item).__name__}"
    return None


class _Cursor:
    """Walks an absolute map in runs: take(n) gives the next up-to-n pages of one kind."""

    __slots__ = ("_index", "_items", "_offset")

    def __init__(self, items: Sequence[MapItem]) -> None:
        self._items = items
        self._index = 0
        self._offset = 0
        """Pages of the current item already taken."""

    def take(self, wanted: int) -> tuple[int, bytes | None]:
        """(count, hashes or None for zeros); count 0 at the end."""
        items = self._items
        while self._index < len(items):
            item = items[self._index]
            if isinstance(item, int):
                size = item
                left = size - self._offset
                if left <= 0:
                    self._index, self._offset = self._index + 1, 0
                    continue
                count = min(wanted, left)
                self._offset += count
                return count, None
            blob: bytes = item
            left = len(blob) // HASH_SIZE - self._offset
            if left <= 0:
                self._index, self._offset = self._index + 1, 0
                continue
            count = min(wanted, left)
            start = self._offset * HASH_SIZE
            self._offset += count
            return count, blob[start : start + count * HASH_SIZE]
        return 0, None


class _DeltaBuilder:
    __slots__ = ("_blob", "items")

    def __init__(self) -> None:
        self.items: PageMap = []
        self._blob = bytearray()

    def _run(self, count: int) -> None:
        if self._blob:
            self.items.append(bytes(self._blob))
            self._blob.clear()
        items = self.items
        if items and isinstance(items[-1], int) and (items[-1] > 0) == (count > 0):
            items[-1] += count
        else:
            items.append(count)

    def zeros(self, count: int) -> None:
        self._run(count)

    def same(self, count: int) -> None:
        self._run(-count)

    def hashes(self, blob: bytes) -> None:
        self._blob += blob

    def finish(self) -> PageMap:
        if self._blob:
            self.items.append(bytes(self._blob))
            self._blob.clear()
        return self.items


def delta(base: Sequence[MapItem], new: Sequence[MapItem]) -> PageMap:
    """``new`` as a delta against ``base`` (both absolute, same page count)."""
    if map_pages(base) != map_pages(new):
        raise ValueError("maps of different sizes")
    cursor = _Cursor(base)
    out = _DeltaBuilder()
    for item in new:
        if isinstance(item, int):
            left: int = item
            while left:
                count, old = cursor.take(left)
                if old is None:
                    out.same(count)
                else:
                    out.zeros(count)
                left -= count
            continue
        blob: bytes = item
        position, left = 0, len(blob) // HASH_SIZE
        while left:
            count, old = cursor.take(left)
            segment = blob[position * HASH_SIZE : (position + count) * HASH_SIZE]
            if old is None:
                out.hashes(segment)
            elif old == segment:
                out.same(count)
            else:
                for page in range(count):
                    at = page * HASH_SIZE
                    mine = segment[at : at + HASH_SIZE]
                    if mine == old[at : at + HASH_SIZE]:
                        out.same(1)
                    else:
                        out.hashes(mine)
            position += count
            left -= count
    return out.finish()


def apply_delta(base: Sequence[MapItem], change: Sequence[MapItem]) -> PageMap:
    """The absolute map a delta describes. ValueError if it does not fit ``base``."""
    cursor = _Cursor(base)
    out = MapBuilder()
    for item in change:
        if isinstance(item, int):
            left: int = abs(item)
            keep = item < 0
            while left:
                count, old = cursor.take(left)
                if count == 0:
                    raise ValueError("delta longer than its base")
                if not keep or old is None:
                    out.zeros(count)
                else:
                    out.hashes(old)
                left -= count
            continue
        blob: bytes = item
        left = len(blob) // HASH_SIZE
        while left:
            count, _ = cursor.take(left)
            if count == 0:
                raise ValueError("delta longer than its base")
            left -= count
        out.hashes(blob)
    if cursor.take(1)[0]:
        raise ValueError("delta shorter than its base")
    return out.finish()
