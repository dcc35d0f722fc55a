"""Disk images with known content, so a test can tell exactly what the guest saw and wrote.

Content comes from a seeded PRNG: the same seed gives the same bytes, which lets a test
recompute the expected image instead of keeping a copy.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

from vhtrace.lab import programs

_CHUNK = 1 << 20


def create_image(path: Path, size: int, *, fmt: str = "raw", qemu_img: Path | None = None) -> Path:
    """Create an empty image of ``size`` bytes with qemu-img (any format QSD can open)."""
    program = qemu_img or programs.qemu_img()
    result = subprocess.run(
        [str(program), "create", "-q", "-f", fmt, str(path), str(size)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"qemu-img create {path} failed: {result.stderr.strip()}")
    return Path(path)


def random_bytes(size: int, seed: int) -> bytes:
    """``size`` reproducible pseudo-random bytes for ``seed``."""
    return random.Random(seed).randbytes(size)


def fill_random(path: Path, seed: int, size: int | None = None) -> str:
    """Overwrite a raw image (or any file) with seeded random bytes; their md5 hex.

    ``size`` defaults to the current file size, so it pairs with :func:`create_image`.
    """
    path = Path(path)
    size = path.stat().st_size if size is None else size
    rng = random.Random(seed)
    digest = hashlib.md5()
    with path.open("r+b" if path.exists() else "wb") as f:
        remaining = size
        while remaining:
            block = rng.randbytes(min(_CHUNK, remaining))
            f.write(block)
            digest.update(block)
            remaining -= len(block)
        f.truncate(size)
    return digest.hexdigest()


def md5_file(path: Path) -> str:
    """md5 hex of a file's bytes (what the guest's md5sum prints for the disk)."""
    digest = hashlib.md5()
    with Path(path).open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()
