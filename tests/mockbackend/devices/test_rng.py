"""The entropy device of the mock back-end."""

from __future__ import annotations

from mockbackend import RngDevice, Script
from mockbackend.testing import kick, wait_used
from tests.mockbackend.driving import started
from vhtrace import wire


def test_rng_fills_the_buffers_it_is_given() -> None:
    device = RngDevice(source=lambda n: bytes(range(256)) * (n // 256 + 1))
    fe, driver, kick_fd, call_fd = started(Script(device))
    where = driver.buffer(300)
    driver.make_available(driver.chain([(where, 300, True)]))
    kick(kick_fd)
    wait_used(driver, 1)
    assert driver.used_entry(0) == (0, 300)
    assert driver.read(where, 300) == (bytes(range(256)) * 2)[:300]
    wire.close_fds([kick_fd, call_fd])
    fe.close()
