"""Fixtures of the mock back-end's unit tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mockbackend.driving import DISK


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Path]:
    """A disk image of DISK random bytes."""
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(DISK))
    yield path
