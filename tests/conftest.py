"""Shared fixtures: synthetic traces written with the real TraceWriter, and the real stack.

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

from vhtrace import synthetic
from vhtrace.trace.writer import TraceWriter, make_header

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


def write_synthetic_trace(
    path: Path,
    count: int,
    *,
    close: bool = True,
    flush_every: int = 0,
    device: str | None = "blk",
) -> Path:
    """``count`` messages of back-to-back vhost-user-blk sessions (vhtrace.synthetic),
    each session opened and closed by its events, 1 us apart, fd metadata included.

    ``flush_every``: end a zstd frame every that many messages (0: only at the end).
    ``close=False`` leaves the trace as a killed writer would after its last flush."""
    header = make_header(device=device, endpoints={"frontend": "qemu", "backend": "qsd"})
    mono, wall = header["mono_ns"], header["wall_ns"]
    writer = TraceWriter(str(path), header)
    session = 0
    for seq, (number, message) in enumerate(synthetic.messages(count), 1):
        if number != session:
            if session:
                writer.event(mono + seq * 1000, wall + seq * 1000, session, "session-end", {})
            session = number
            writer.event(mono + seq * 1000, wall + seq * 1000, session, "session-start", {})
        writer.message(
            seq,
            mono + seq * 1000,
            wall + seq * 1000,
            session,
            message.channel.value,
            message.sender.value,
            message.frame.raw,
            [synthetic.fd_meta(kind) for kind in message.fd_kinds],
        )
        if flush_every and seq % flush_every == 0:
            writer.flush()
    if close:
        end = mono + (count + 1) * 1000
        writer.event(end, wall + (count + 1) * 1000, session, "session-end", {"reason": "eof"})
        writer.close({"messages": count})
    else:
        writer.flush()
    return path


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
