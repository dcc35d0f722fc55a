"""The libc calls the mock maps guest memory with: shared mappings, errors with errno."""

from __future__ import annotations

import errno
import os
import platform

import pytest

from mockbackend import libc

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def memfd():
    fd = os.memfd_create("libc-test", os.MFD_CLOEXEC)
    os.ftruncate(fd, 2 * PAGE)
    yield fd
    os.close(fd)


def test_a_shared_mapping_sees_the_file_and_the_file_sees_it(memfd: int) -> None:
    os.pwrite(memfd, b"from the file", 0)
    addr = libc.mmap(memfd, 2 * PAGE)
    try:
        view = libc.buffer_at(addr, 2 * PAGE)
        assert bytes(view[:13]) == b"from the file"
        view[PAGE : PAGE + 7] = b"from us"
        assert os.pread(memfd, 7, PAGE) == b"from us"
    finally:
        libc.munmap(addr, 2 * PAGE)


def test_madvise_dontneed_on_a_shared_mapping_keeps_the_file(memfd: int) -> None:
    addr = libc.mmap(memfd, PAGE)
    try:
        libc.buffer_at(addr, 4)[:] = b"kept"
        libc.madvise(addr, PAGE, libc.MADV_DONTNEED)
        assert bytes(libc.buffer_at(addr, 4)) == b"kept"  # read back from the memfd
        libc.mprotect(addr, PAGE, libc.PROT_READ)
    finally:
        libc.munmap(addr, PAGE)


def test_failures_raise_oserror_with_errno_and_what_failed() -> None:
    with pytest.raises(OSError) as failed:
        libc.mmap(-1, PAGE)
    assert failed.value.errno == errno.EBADF and "mmap of" in str(failed.value)
    with pytest.raises(OSError, match="madvise") as failed:
        libc.madvise(1, PAGE, libc.MADV_DONTNEED)  # not page aligned
    assert failed.value.errno == errno.EINVAL


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the syscall numbers are x86_64's")
def test_a_raw_syscall_returns_its_result_or_raises() -> None:
    sys_getpid = 39
    assert libc.syscall(sys_getpid) == os.getpid()
    with pytest.raises(OSError, match="syscall 3"):
        libc.syscall(3, -1)  # close(-1): EBADF
