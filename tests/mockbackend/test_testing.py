"""The fake front-end script authors test with (docs/mockbackend.md): it drives the mock as
QEMU would, and its driver lays rings out as the virtio spec does."""

from __future__ import annotations

import mmap

import pytest

from mockbackend import RngDevice, Script
from mockbackend.testing import GUEST_SIZE, Driver, FakeFrontend, kick, wait_used
from vhtrace.protocol import spec, virtio


def test_negotiate_takes_what_is_offered_and_the_mock_sees_it() -> None:
    fe = FakeFrontend(Script(RngDevice()))
    wanted = 1 << spec.ProtocolFeature.REPLY_ACK | 1 << spec.ProtocolFeature.MQ
    features, protocol = fe.negotiate(protocol_features=wanted)
    assert features >> spec.VIRTIO_F_VERSION_1 & 1
    assert protocol == wanted
    fe.set_mem_table()
    assert fe.ask("GET_QUEUE_NUM")["value"] >= 1
    report = fe.close()
    assert report.violations == [] and report.ok(fail_on_violations=True)
    assert fe.ctx.state.protocol_acked == protocol


def test_a_ring_the_driver_fills_is_used_by_the_device() -> None:
    fe = FakeFrontend(Script(RngDevice()))
    fe.negotiate()
    fe.set_mem_table()
    driver = Driver(fe.ram, size=8)
    kick_fd, _ = fe.start_ring(0, driver)
    buffer = driver.buffer(64)
    head = driver.chain([(buffer, 64, True)])
    driver.make_available(head)
    kick(kick_fd)
    wait_used(driver, 1)
    assert driver.used_entry(0) == (head, 64)
    assert driver.read(buffer, 64) != bytes(64)  # entropy came
    fe.close()


def test_the_driver_writes_the_spec_layout() -> None:
    ram = mmap.mmap(-1, GUEST_SIZE)
    driver = Driver(ram, size=4)
    first = driver.buffer(b"abc")
    second = driver.buffer(5)
    assert (first, second - first) == (driver.data, 16)  # 16-byte aligned
    head = driver.chain([(first, 3, False), (second, 5, True)])
    assert head == 0
    desc0 = virtio.DESC.unpack_from(ram, driver.desc)
    desc1 = virtio.DESC.unpack_from(ram, driver.desc + virtio.DESC_SIZE)
    assert desc0 == (first, 3, virtio.DESC_F_NEXT, 1)
    assert desc1 == (second, 5, virtio.DESC_F_WRITE, 2)
    for _ in range(5):
        driver.make_available(head)
    assert virtio.U16.unpack_from(ram, driver.avail + virtio.RING_IDX_OFFSET)[0] == 5
    assert driver.used_idx() == 0
    ram.close()


def test_waiting_for_chains_that_never_come_fails() -> None:
    ram = mmap.mmap(-1, GUEST_SIZE)
    with pytest.raises(AssertionError):
        wait_used(Driver(ram), 1, timeout=0.2)
    ram.close()
