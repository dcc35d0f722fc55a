"""Fixtures of the replay tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def where() -> Iterator[Path]:
    """A short directory for sockets (unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vhr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
