"""The real-stack tests: every test here is marked ``system`` (``-m "not system"`` runs
the unit tests alone) and may use the ``lab`` fixture, which no test elsewhere may."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dissect.conftest import exported, lua_file, synthetic_dir, tshark  # noqa: F401

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.system)
