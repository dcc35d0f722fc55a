"""What a passed fd is, told from the fd itself: real fds of each kind the recorder meets."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vhtrace import fdinfo


@pytest.fixture
def fds() -> Iterator[list[int]]:
    """Close what a test opened."""
    opened: list[int] = []
    yield opened
    for fd in opened:
        os.close(fd)


def test_a_memfd_has_its_name_size_and_seals(fds: list[int]) -> None:
    fd = os.memfd_create("guest-ram", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    fds.append(fd)
    os.ftruncate(fd, 1 << 20)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    meta = fdinfo.describe(fd)
    assert (meta["kind"], meta["name"], meta["size"]) == ("memfd", "guest-ram", 1 << 20)
    assert meta["seals"] == ["shrink", "grow"]
    assert meta["flags"] == ["rdwr"]
    assert meta["ino"] == os.fstat(fd).st_ino


def test_an_eventfd_and_the_ends_of_a_pipe(fds: list[int]) -> None:
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    read_end, write_end = os.pipe()
    fds += [efd, read_end, write_end]
    assert fdinfo.describe(efd)["kind"] == "eventfd"
    assert "nonblock" in fdinfo.describe(efd)["flags"]
    assert fdinfo.describe(read_end)["kind"] == "pipe"
    assert fdinfo.describe(write_end)["flags"][0] == "wronly"
    assert "size" not in fdinfo.describe(read_end)


def test_a_unix_socket_says_its_family_and_type() -> None:
    one, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with one, other:
        meta = fdinfo.describe(one.fileno())
    assert (meta["kind"], meta["family"], meta["type"]) == ("socket", "unix", "seqpacket")


def test_a_regular_file_has_its_path(tmp_path: Path, fds: list[int]) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(4096))
    fd = os.open(path, os.O_RDONLY)
    fds.append(fd)
    meta = fdinfo.describe(fd)
    assert (meta["kind"], meta["path"], meta["size"]) == ("regular", str(path), 4096)


def test_a_closed_fd_is_described_not_raised() -> None:
    fd = os.eventfd(0)
    os.close(fd)
    meta = fdinfo.describe(fd)
    assert meta["kind"] == "other" and meta["error"]


@pytest.mark.parametrize(
    ("target", "mode", "magic", "kind"),
    [
        ("/memfd:x (deleted)", stat.S_IFREG, None, "memfd"),
        ("socket:[12]", 0, None, "socket"),
        ("pipe:[3]", 0, None, "pipe"),
        ("anon_inode:[eventfd]", 0, None, "eventfd"),
        ("anon_inode:[userfaultfd]", 0, None, "userfaultfd"),
        ("/dmabuf:", 0, None, "dma-buf"),
        ("/dev/hugepages/x", stat.S_IFREG, fdinfo.HUGETLBFS_MAGIC, "hugetlbfs"),
        ("/tmp/f", stat.S_IFREG, 0xEF53, "regular"),
        ("/dev/null", stat.S_IFCHR, None, "other"),
    ],
)
def test_kinds_from_the_link_the_mode_and_the_filesystem(target, mode, magic, kind) -> None:
    assert fdinfo.kind_of_link(target, mode, magic) == kind
    assert kind in fdinfo.FD_KINDS


def test_open_flags_in_words() -> None:
    assert fdinfo.open_flags(os.O_RDWR | os.O_APPEND) == ["rdwr", "append"]
    assert fdinfo.open_flags(os.O_RDONLY) == ["rdonly"]
