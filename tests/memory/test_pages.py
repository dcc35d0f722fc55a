"""Pages and page maps: zero detection, hashes, run lists, deltas (pure)."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vhtrace.memory import pages
from vhtrace.memory.pages import HASH_SIZE, PAGE_SIZE, MapBuilder, PageSink


class Collect(PageSink):
    def __init__(self) -> None:
        self.offered: list[tuple[bytes, bytes]] = []

    def offer(self, digest: bytes, page: bytes) -> None:
        self.offered.append((digest, page))


def scan(data: bytes) -> tuple[list[int | bytes], Collect]:
    builder, sink = MapBuilder(), Collect()
    pages.scan(data, builder, sink)
    return builder.finish(), sink


def test_zero_memory_is_one_run_and_offers_nothing() -> None:
    items, sink = scan(bytes(3 * pages.CHUNK_PAGES * PAGE_SIZE + 5 * PAGE_SIZE))
    assert items == [3 * pages.CHUNK_PAGES + 5]
    assert sink.offered == []


def test_non_zero_pages_are_named_by_their_content() -> None:
    a, b = os.urandom(PAGE_SIZE), b"\x01" + bytes(PAGE_SIZE - 1)
    data = bytes(PAGE_SIZE) + a + a + bytes(2 * PAGE_SIZE) + b
    items, sink = scan(data)
    ha, hb = pages.page_hash(a), pages.page_hash(b)
    assert items == [1, ha + ha, 2, hb]
    assert [page for _, page in sink.offered] == [a, a, b]
    assert pages.map_pages(items) == 6
    assert list(pages.iter_hashes(items)) == [(1, ha), (2, ha), (5, hb)]
    assert pages.hash_at(items, 0) is None and pages.hash_at(items, 5) == hb
    with pytest.raises(IndexError):
        pages.hash_at(items, 6)


def test_a_single_byte_in_a_large_chunk_is_found() -> None:
    data = bytearray(2 * pages.CHUNK_PAGES * PAGE_SIZE)
    data[pages.CHUNK_PAGES * PAGE_SIZE + 7 * PAGE_SIZE + 4095] = 1
    items, sink = scan(bytes(data))
    assert len(sink.offered) == 1
    assert items[0] == pages.CHUNK_PAGES + 7 and items[2] == pages.CHUNK_PAGES - 8


def test_pages_spanning() -> None:
    assert pages.pages_spanning(0x1000, 0x1000) == (0x1000, 1)
    assert pages.pages_spanning(0x1FFF, 2) == (0x1000, 2)
    assert pages.pages_spanning(0x1234, 0) == (0x1000, 0)


def test_an_unchanged_map_is_one_negative_run() -> None:
    items = [5, os.urandom(3 * HASH_SIZE), 100, os.urandom(HASH_SIZE)]
    assert pages.delta(items, items) == [-109]
    assert pages.apply_delta(items, [-109]) == items


def test_a_delta_names_only_what_changed() -> None:
    h = [os.urandom(HASH_SIZE) for _ in range(4)]
    base = [2, h[0] + h[1], 2]
    new = [2, h[0] + h[2], 1, h[3]]
    change = pages.delta(base, new)
    assert change == [-3, h[2], -1, h[3]]
    assert pages.apply_delta(base, change) == new


def test_malformed_maps_are_named() -> None:
    assert pages.check_map([1, b"x" * 16], delta=False) is None
    assert pages.check_map([-1], delta=False) == "bad run -1"
    assert pages.check_map([-1], delta=True) is None
    assert pages.check_map([0], delta=True) == "bad run 0"
    assert "hash blob" in (pages.check_map([b"x" * 15], delta=False) or "")
    assert "unexpected" in (pages.check_map(["text"], delta=False) or "")
    assert "unexpected" in (pages.check_map([True], delta=False) or "")


def test_a_delta_that_does_not_fit_its_base_is_refused() -> None:
    with pytest.raises(ValueError):
        pages.apply_delta([4], [-5])
    with pytest.raises(ValueError):
        pages.apply_delta([4], [-3])
    with pytest.raises(ValueError):
        pages.delta([4], [5])


# A map as a list of per-page entries: None (zero) or a small hash id.
page_lists = st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=1, max_size=60)


def to_map(entries: list[int | None]) -> list[int | bytes]:
    builder = MapBuilder()
    for entry in entries:
        if entry is None:
            builder.zeros(1)
        else:
            builder.hash(bytes([entry]) * HASH_SIZE)
    return builder.finish()


@given(page_lists, st.data())
def test_delta_then_apply_gives_the_new_map_back(old: list[int | None], data) -> None:
    new = data.draw(
        st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=len(old), max_size=len(old))
    )
    base, target = to_map(old), to_map(new)
    change = pages.delta(base, target)
    assert pages.check_map(change, delta=True) is None
    assert pages.apply_delta(base, change) == target
    assert pages.map_pages(change) == len(old)
    # runs are merged: no two neighbours of the same kind
    kinds = [("z" if i > 0 else "s") if isinstance(i, int) else "h" for i in change]
    assert all(a != b for a, b in itertools.pairwise(kinds))
