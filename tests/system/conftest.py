"""Fixtures for tests that drive the real vhost-user stack through vhtrace.lab.

``lab`` gives each test a :class:`vhtrace.lab.Workspace` (short socket directory, data
directory under tmp_path, shared initramfs cache) and stops every process it started.
A test states what it needs with ``@pytest.mark.lab_needs("qemu", "qsd", ...)`` and is
skipped with the reason (and the package to install) when any of it is missing.
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
    """Where initramfs images are cached: $VHTRACE_LAB_CACHE, else one dir per session."""
    env = os.environ.get("VHTRACE_LAB_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("lab-cache")


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path, lab_cache: Path) -> Iterator[Workspace]:
    """A lab workspace; skips with a named reason when a needed program is missing."""
    marker = request.node.get_closest_marker("lab_needs")
    needs = tuple(marker.args) if marker else DEFAULT_NEEDS
    reasons = missing(*needs)
    if reasons:
        pytest.skip("; ".join(reasons))
    with Workspace(tmp_path, lab_cache) as workspace:
        yield workspace
