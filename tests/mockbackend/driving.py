"""Driving the mock back-end from a fake front-end: a started ring, a virtio-blk request.

Shared by the tests of the modules the scripting API is built from (script, faults,
expect, channel, postcopy, server, devices).
"""

from __future__ import annotations

import struct

from mockbackend import Script
from mockbackend.testing import Driver, FakeFrontend

DISK = 1 << 20


def blk_request(
    driver: Driver, kind: int, sector: int, data: bytes | int, writable: bool
) -> tuple[int, int, int]:
    """Queue one virtio-blk request; (head, data address, status address)."""
    header = driver.buffer(struct.pack("<IIQ", kind, 0, sector))
    size = data if isinstance(data, int) else len(data)
    body = driver.buffer(data) if size else 0
    status = driver.buffer(b"\xff")
    parts = [(header, 16, False)]
    if size:
        parts.append((body, size, writable))
    parts.append((status, 1, True))
    head = driver.chain(parts)
    driver.make_available(head)
    return head, body, status


def started(script: Script) -> tuple[FakeFrontend, Driver, int, int]:
    fe = FakeFrontend(script)
    fe.negotiate()
    fe.set_mem_table()
    driver = Driver(fe.ram, size=64)
    kick_fd, call_fd = fe.start_ring(0, driver)
    return fe, driver, kick_fd, call_fd
