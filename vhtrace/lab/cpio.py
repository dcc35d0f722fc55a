"""Write "newc" cpio archives, the format the Linux kernel unpacks as an initramfs.

Written in Python rather than by calling ``cpio`` so that an archive can hold root-owned
entries and device nodes (``/dev/console``) without root privileges or a staging tree,
and so that the output is byte-for-byte reproducible (fixed inode numbers and mtimes).
"""

from __future__ import annotations

import stat
from typing import BinaryIO

_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


class NewcWriter:
    """Append entries to a newc cpio stream; call :meth:`close` to write the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._names: set[str] = set()

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        name = name.lstrip("/") or "."
        if name in self._names and name != TRAILER:
            raise ValueError(f"duplicate cpio entry {name!r}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (
            self._ino,  # c_ino
            mode,  # c_mode
            0,  # c_uid
            0,  # c_gid
            2 if stat.S_ISDIR(mode) else 1,  # c_nlink
            0,  # c_mtime: fixed, for reproducible archives
            len(data),  # c_filesize
            0,  # c_devmajor
            0,  # c_devminor
            rdev[0],  # c_rdevmajor
            rdev[1],  # c_rdevminor
            len(encoded),  # c_namesize
            0,  # c_check
        )
        self._ino += 1
        header = _MAGIC + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + encoded + _pad4(len(header) + len(encoded)))
        self._out.write(data + _pad4(len(data)))

    def directory(self, name: str, perm: int = 0o755) -> None:
        """Add a directory (parents must be added first)."""
        self._entry(name, stat.S_IFDIR | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        """Add a regular file with the given content."""
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link; newc stores the target as the file data."""
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        """Add a character device node, e.g. /dev/console (5, 1)."""
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer entry that ends the archive."""
        self._entry(TRAILER, 0)
