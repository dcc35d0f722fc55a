"""Choose, order and decompress the kernel modules a test guest needs for its virtio devices.

The Debian kernel builds the virtio drivers as modules, and busybox ``insmod`` neither
resolves dependencies nor (reliably) reads compressed modules, so the initramfs must carry
plain ``.ko`` files and load them in dependency order. The order comes from the kernel's
own ``modules.dep`` (so new dependencies in newer kernels are picked up), seeded with the
lists below; modules that are built in or absent are reported, not treated as errors.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: Modules every virtio-pci guest needs, in load order.
BASE_MODULES: tuple[str, ...] = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
)

#: Extra modules per vhost-user device kind, in load order.
DEVICE_MODULES: dict[str, tuple[str, ...]] = {
    "blk": ("virtio_blk",),
    "fs": ("fuse", "virtiofs"),
    "net": ("failover", "net_failover", "virtio_net"),
}


def _norm(name: str) -> str:
    """Module names treat '-' and '_' alike (virtio-rng.ko is loaded as virtio_rng)."""
    base = Path(name).name
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


@dataclass(frozen=True)
class ModulePlan:
    """Which modules to insmod in which order, and which were skipped and why."""

    load: tuple[tuple[str, Path], ...]
    builtin: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def names(self) -> tuple[str, ...]:
        """Module names in load order."""
        return tuple(name for name, _ in self.load)


def _read_deps(modules_dir: Path) -> dict[str, tuple[Path, list[str]]]:
    deps: dict[str, tuple[Path, list[str]]] = {}
    dep_file = modules_dir / "modules.dep"
    if not dep_file.is_file():
        return deps
    for line in dep_file.read_text().splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[_norm(path)] = (modules_dir / path, [_norm(d) for d in rest.split()])
    return deps


def _read_builtin(modules_dir: Path) -> set[str]:
    builtin_file = modules_dir / "modules.builtin"
    if not builtin_file.is_file():
        return set()
    return {_norm(line) for line in builtin_file.read_text().split()}


def plan_modules(modules_dir: Path, devices: Iterable[str]) -> ModulePlan:
    """Load order for BASE_MODULES plus the modules of each device kind (blk, fs, net)."""
    wanted = list(BASE_MODULES)
    for kind in devices:
        if kind not in DEVICE_MODULES:
            raise ValueError(f"unknown device kind {kind!r}; known: {sorted(DEVICE_MODULES)}")
        wanted.extend(DEVICE_MODULES[kind])

    deps = _read_deps(modules_dir)
    if not deps:
        # No modules.dep (unusual): fall back to searching the tree, in the listed order.
        for path in modules_dir.rglob("*.ko*"):
            deps.setdefault(_norm(path.name), (path, []))
    builtin = _read_builtin(modules_dir)

    load: list[tuple[str, Path]] = []
    seen: set[str] = set()
    skipped_builtin: list[str] = []
    skipped_absent: list[str] = []

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name in deps:
            path, requires = deps[name]
            for dep in requires:
                visit(dep)
            load.append((name, path))
        elif name in builtin:
            skipped_builtin.append(name)
        else:
            skipped_absent.append(name)

    for name in wanted:
        visit(name)

    notes = [f"{n}: built into the kernel, not loaded" for n in skipped_builtin]
    notes += [f"{n}: not found in {modules_dir}, not loaded" for n in skipped_absent]
    return ModulePlan(tuple(load), tuple(skipped_builtin), tuple(skipped_absent), tuple(notes))


def read_module(path: Path) -> bytes:
    """The plain ELF bytes of a module, decompressing .ko.xz / .ko.zst / .ko.gz."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return _unzstd(data, path)
    return data


def _unzstd(data: bytes, path: Path) -> bytes:
    try:
        import zstandard
    except ImportError:
        zstd = shutil.which("zstd")
        if zstd is None:
            raise RuntimeError(
                f"cannot decompress {path}: neither the zstandard module nor zstd is installed"
            ) from None
        return subprocess.run([zstd, "-dc"], input=data, capture_output=True, check=True).stdout
    # decompressobj copes with frames that do not record the content size.
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)
