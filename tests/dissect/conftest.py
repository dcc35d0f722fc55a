"""Fixtures for the dissection tests: traces (synthetic and real) and a quiet tshark."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dissect import corpus
from vhtrace.dissect.export import LinkType, export_trace
from vhtrace.dissect.lua import lua_source

REPO = Path(__file__).resolve().parents[2]
REAL_TRACES = sorted((REPO / "traces").glob("*.vht"))
SYNTHETIC = {"blk": corpus.blk, "every_layout": corpus.every_layout}
TSHARK = shutil.which("tshark")

needs_tshark = pytest.mark.skipif(
    TSHARK is None, reason="tshark is not installed (Debian: apt-get install tshark)"
)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synthetic")
    for name, build in SYNTHETIC.items():
        corpus.write_trace(path / f"{name}.vht", build())
    return path


def trace_ids() -> list[str]:
    return [f"synthetic:{name}" for name in SYNTHETIC] + [f"real:{p.name}" for p in REAL_TRACES]


@pytest.fixture(params=trace_ids())
def any_trace(request: pytest.FixtureRequest, synthetic_dir: Path) -> Path:
    """Every synthetic trace and every real trace under traces/."""
    kind, name = request.param.split(":", 1)
    return synthetic_dir / f"{name}.vht" if kind == "synthetic" else REPO / "traces" / name


@pytest.fixture(scope="session")
def lua_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lua") / "vhost-user.lua"
    path.write_text(lua_source())
    return path


@pytest.fixture(scope="session")
def exported(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A trace exported to pcapng (cached per trace and link type)."""
    out_dir = tmp_path_factory.mktemp("pcapng")
    cache: dict[tuple[Path, LinkType], Path] = {}

    def export(trace: Path, linktype: LinkType = LinkType.UPPER_PDU) -> Path:
        if (trace, linktype) not in cache:
            out = out_dir / f"{trace.stem}-{linktype.value}.pcapng"
            with out.open("wb") as stream:
                export_trace(trace, stream, linktype)
            cache[trace, linktype] = out
        return cache[trace, linktype]

    return export


@pytest.fixture(scope="session")
def tshark(lua_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """Run tshark with only our Lua dissector loaded, no name resolution, no user config."""
    if TSHARK is None:
        pytest.skip("tshark is not installed (Debian: apt-get install tshark)")
    home = tmp_path_factory.mktemp("tshark-home")
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}

    def run(capture: Path, *args: str) -> str:
        command = [TSHARK, "-n", "-X", f"lua_script:{lua_file}", "-r", str(capture), *args]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        errors = [line for line in done.stderr.splitlines() if "Running as user" not in line]
        assert not errors, errors
        assert "Lua Error" not in done.stdout
        return done.stdout

    return run


def frames(output: str) -> list[int]:
    """Frame numbers printed by ``-T fields -e frame.number``."""
    return [int(line) for line in output.split()]
