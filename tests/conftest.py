"""Shared fixtures: synthetic traces (tests.support.synthetic) and the real stack.

``lab`` gives a test a :class:`vhtrace.lab.Workspace` (short socket directory, data
directory under tmp_path, shared initramfs cache) and stops every process it started.
A test states what it needs with ``@pytest.mark.lab_needs("qemu", "qsd", ...)`` and is
skipped with the reason (and the package to install) when any of it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.synthetic import write_synthetic_trace

if TYPE_CHECKING:
    from vhtrace.lab import Workspace

SYSTEM_TESTS = Path(__file__).resolve().parent / "system"

LAB_DEFAULT_NEEDS = ("qemu", "busybox", "kernel")


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
    """A lab workspace; skips with a named reason when a needed program is missing.

    Only the real-stack tests under tests/system/ get one: a unit test never starts
    QEMU or a back-end."""
    if not request.node.path.is_relative_to(SYSTEM_TESTS):
        pytest.fail(f"{request.node.nodeid}: the lab is for tests under tests/system/")
    from vhtrace.lab import Workspace, missing

    marker = request.node.get_closest_marker("lab_needs")
    needs = tuple(marker.args) if marker else LAB_DEFAULT_NEEDS
    reasons = missing(*needs)
    if reasons:
        pytest.skip("; ".join(reasons))
    with Workspace(tmp_path, lab_cache) as workspace:
        yield workspace


SyntheticTrace = Callable[..., Path]


@pytest.fixture
def synthetic_trace(tmp_path: Path) -> SyntheticTrace:
    """Write a synthetic trace: ``synthetic_trace(count, name=..., **options)``."""

    def write(count: int = 100, name: str = "synthetic.vht", **options: object) -> Path:
        return write_synthetic_trace(tmp_path / name, count, **options)

    return write


@pytest.fixture(scope="session")
def write_trace() -> Callable[..., Path]:
    """:func:`write_synthetic_trace` itself, for fixtures of a wider scope."""
    return write_synthetic_trace
