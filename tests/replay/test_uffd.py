"""The userfaultfd replay hands to a postcopy back-end (POSTCOPY_ADVISE's reply)."""

from __future__ import annotations

import fcntl
import os
import platform

import pytest

from vhtrace.fdinfo import describe
from vhtrace.replay import uffd


def test_a_userfaultfd_when_the_kernel_allows_one() -> None:
    try:
        fd = uffd.open_userfaultfd()
    except OSError as exc:  # vm.unprivileged_userfaultfd=0 for non-root, or no such syscall
        pytest.skip(f"userfaultfd refused here: {exc}")
    try:
        assert describe(fd)["kind"] == "userfaultfd"
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.get_blocking(fd) is False
    finally:
        os.close(fd)


def test_the_ioctl_number_is_uffdio_apis() -> None:
    assert uffd.UFFDIO_API == 0xC018AA3F  # _IOWR(0xAA, 0x3F, 24 bytes), as linux/userfaultfd.h


def test_an_unknown_machine_is_an_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "pdp11")
    with pytest.raises(OSError, match="syscall number unknown on pdp11"):
        uffd.open_userfaultfd()
