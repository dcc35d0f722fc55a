"""The page index: a page is stored once, and the index stays bounded."""

from __future__ import annotations

import pytest

from vhtrace.memory.store import PageIndex


def digest(n: int) -> bytes:
    return n.to_bytes(16, "little")


def test_a_hash_is_new_once() -> None:
    index = PageIndex(100)
    assert index.remember(digest(1)) is False
    assert index.remember(digest(1)) is True
    assert digest(1) in index and len(index) == 1


def test_the_index_never_holds_more_than_its_capacity() -> None:
    index = PageIndex(10)
    for n in range(1000):
        index.remember(digest(n))
        assert len(index) <= 10
    assert index.forgotten >= 980
    assert index.remember(digest(0)) is False  # forgotten long ago: stored again


def test_hashes_in_use_survive_generations() -> None:
    index = PageIndex(10)
    for n in range(100):
        index.remember(digest(n))
        assert index.remember(digest(-1 % (1 << 64))) is (n > 0)  # touched every time


def test_capacity_must_allow_two_generations() -> None:
    with pytest.raises(ValueError):
        PageIndex(1)
