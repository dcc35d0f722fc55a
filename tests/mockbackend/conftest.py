"""Fixtures of the mock back-end tests.

``lab`` mirrors the fixture of tests/system/conftest.py (a :class:`vhtrace.lab.Workspace`
that stops every process it started, skipping with a named reason when a program is
missing), so these tests run on their own too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vhtrace.lab import Workspace, missing

DEFAULT_NEEDS = ("qemu", "busybox", "kernel")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lab_needs(*names): lab programs the test needs (see vhtrace.lab.programs.missing)",
    )


@pytest.fixture(scope="session")
def lab_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("VHTRACE_LAB_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("lab-cache")


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path, lab_cache: Path) -> Iterator[Workspace]:
    marker = request.node.get_closest_marker("lab_needs")
    reasons = missing(*(tuple(marker.args) if marker else DEFAULT_NEEDS))
    if reasons:
        pytest.skip("; ".join(reasons))
    with Workspace(tmp_path, lab_cache) as workspace:
        yield workspace
