"""The vhost-user-blk device of the mock back-end: every request type, over a fake front-end."""

from __future__ import annotations

import os
import struct

from mockbackend import BlkDevice, Script
from mockbackend.devices import blk
from mockbackend.testing import kick, wait_used
from tests.mockbackend.driving import DISK, blk_request, started
from vhtrace import wire


def test_blk_serves_every_request_type(image) -> None:
    original = image.read_bytes()
    device = BlkDevice(image, serial="serial-123")
    fe, driver, kick_fd, call_fd = started(Script(device))

    _, read_at, read_status = blk_request(driver, blk.T_IN, 8, 4096, writable=True)
    payload = os.urandom(1024)
    _, _, write_status = blk_request(driver, blk.T_OUT, 100, payload, writable=False)
    _, _, flush_status = blk_request(driver, blk.T_FLUSH, 0, 0, writable=False)
    _, id_at, id_status = blk_request(driver, blk.T_GET_ID, 0, 20, writable=True)
    segment = struct.pack("<QII", 200, 4, 0)
    _, _, discard_status = blk_request(driver, blk.T_DISCARD, 0, segment, writable=False)
    _, _, zeroes_status = blk_request(
        driver, blk.T_WRITE_ZEROES, 0, struct.pack("<QII", 300, 2, 0), writable=False
    )
    _, _, bad_status = blk_request(driver, 77, 0, 0, writable=False)
    _, _, range_status = blk_request(driver, blk.T_IN, DISK // 512, 512, writable=True)
    kick(kick_fd)
    wait_used(driver, 8)

    assert driver.read(read_at, 4096) == original[8 * 512 : 8 * 512 + 4096]
    assert driver.used_entry(0)[1] == 4097
    data = image.read_bytes()
    assert data[100 * 512 : 100 * 512 + 1024] == payload
    assert driver.read(id_at, 20) == b"serial-123".ljust(20, b"\0")
    assert data[200 * 512 : 204 * 512] == bytes(4 * 512)
    assert data[300 * 512 : 302 * 512] == bytes(2 * 512)
    statuses = [
        driver.read(a, 1)[0]
        for a in (read_status, write_status, flush_status, id_status, discard_status, zeroes_status)
    ]
    assert statuses == [blk.S_OK] * 6
    assert driver.read(bad_status, 1)[0] == blk.S_UNSUPP
    assert driver.read(range_status, 1)[0] == blk.S_IOERR
    assert int.from_bytes(os.read(call_fd, 8), "little") >= 1  # the guest was interrupted
    assert fe.ask("GET_VRING_BASE", {"index": 0, "num": 0})["num"] == 8
    wire.close_fds([kick_fd, call_fd])
    report = fe.close()
    assert report.errors == [] and report.violations == []
    device.close()
