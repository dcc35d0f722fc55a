"""Re-created fds are real fds of the recorded kind (checked with vhtrace's own fdinfo)."""

from __future__ import annotations

import os
import socket

import pytest

from vhtrace import fdinfo
from vhtrace.replay.fds import FdFactory


@pytest.fixture
def factory():
    made = FdFactory()
    yield made
    made.close()


def test_memfd_of_the_recorded_size_and_name(factory: FdFactory) -> None:
    meta = {"kind": "memfd", "dev": "0:1", "ino": 7, "size": 256 << 20, "name": "mem"}
    made = factory.make(meta, seq=22, index=0)
    described = fdinfo.describe(made.fd)
    assert (described["kind"], described["size"], described["name"]) == ("memfd", 256 << 20, "mem")
    assert not made.close_after_send  # kept: the same file may be passed again
    again = factory.make(meta, seq=24, index=0)
    assert again.fd == made.fd
    other = factory.make({**meta, "ino": 8}, seq=24, index=0)
    assert other.fd != made.fd


def test_memory_source_fills_the_memfd() -> None:
    class Source:
        def contents(self, seq, index, meta, fields):
            assert fields == {"guest_phys_addr": 0}
            return [(4096, b"snapshot")] if seq == 22 else None

    factory = FdFactory(Source())
    made = factory.make(
        {"kind": "memfd", "size": 8192}, seq=22, index=0, fields={"guest_phys_addr": 0}
    )
    assert os.pread(made.fd, 8, 4096) == b"snapshot"
    assert os.pread(made.fd, 8, 0) == bytes(8)
    factory.close()


def test_regular_file_becomes_a_memfd_with_a_note(factory: FdFactory) -> None:
    made = factory.make(
        {"kind": "hugetlbfs", "size": 4096, "path": "/dev/hugepages/x"}, seq=5, index=0
    )
    assert fdinfo.describe(made.fd)["kind"] == "memfd"
    assert made.note and "stands in for a hugetlbfs fd" in made.note


def test_eventfds_are_always_new(factory: FdFactory) -> None:
    meta = {"kind": "eventfd", "dev": "0:16", "ino": 1038}
    first, second = factory.make(meta, seq=1, index=0), factory.make(meta, seq=2, index=0)
    assert first.fd != second.fd and first.close_after_send
    assert fdinfo.describe(first.fd)["kind"] == "eventfd"
    os.close(first.fd)
    os.close(second.fd)


def test_socket_keeps_our_end(factory: FdFactory) -> None:
    made = factory.make({"kind": "socket", "interposed": "backend"}, seq=10, index=0)
    assert fdinfo.describe(made.fd)["kind"] == "socket"
    assert isinstance(made.kept, socket.socket) and made.kept_kind == "socket"
    os.write(made.fd, b"ping")
    assert made.kept.recv(4) == b"ping"
    os.close(made.fd)
    made.kept.close()


def test_pipe_gives_the_peer_the_recorded_end(factory: FdFactory) -> None:
    writer = factory.make({"kind": "pipe", "flags": ["wronly"]}, seq=1, index=0)
    assert writer.kept_kind == "pipe-read" and isinstance(writer.kept, int)
    os.write(writer.fd, b"state")
    assert os.read(writer.kept, 5) == b"state"
    reader = factory.make({"kind": "pipe", "flags": ["rdonly"]}, seq=1, index=0)
    assert reader.kept_kind == "pipe-write"
    for fd in (writer.fd, writer.kept, reader.fd, reader.kept):
        assert isinstance(fd, int)
        os.close(fd)


def test_userfaultfd(factory: FdFactory) -> None:
    made = factory.make({"kind": "userfaultfd"}, seq=20, index=0)
    kind = fdinfo.describe(made.fd)["kind"]
    if made.note:  # the kernel refused (unprivileged userfaultfd disabled): /dev/null stands in
        assert "no userfaultfd" in made.note
    else:
        assert kind == "userfaultfd"
    os.close(made.fd)


def test_unknown_kind_is_dev_null_with_a_note(factory: FdFactory) -> None:
    made = factory.make({"kind": "other", "error": "gone"}, seq=3, index=1)
    assert made.note == "#3: fd 1 was recorded as 'other'; /dev/null passed instead"
    os.close(made.fd)
