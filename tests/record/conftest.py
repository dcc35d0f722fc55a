"""Every test here: no ``vhtrace record`` process outlives it, even when it fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.record.harness import stop_leftover_recorders


@pytest.fixture(autouse=True)
def _no_leftover_recorder() -> Iterator[None]:
    yield
    stop_leftover_recorders()
