"""What every device model offers by default: the transport bits, no config, one queue."""

from __future__ import annotations

import pytest

from mockbackend.devices import base
from mockbackend.devices.base import PACKED, TRANSPORT_FEATURES, Device
from mockbackend.virtqueue import Chain
from tests.mockbackend.test_virtqueue import FakeMemory
from vhtrace.protocol import spec


def test_the_transport_bits_are_offered_and_packed_is_not() -> None:
    device = Device()
    assert device.features == TRANSPORT_FEATURES
    for bit in (spec.VIRTIO_F_VERSION_1, spec.VIRTIO_F_INDIRECT_DESC, spec.VIRTIO_F_EVENT_IDX,
                spec.VIRTIO_F_LOG_ALL):  # fmt: skip
        assert device.features >> bit & 1
    assert not device.features & PACKED
    assert PACKED == 1 << spec.VIRTIO_F_RING_PACKED


def test_defaults_one_queue_always_ready_empty_config() -> None:
    device = Device()
    assert (device.reported_queues, device.config()) == (1, b"")
    assert device.ready(0)
    device.write_config(0, b"\x01")  # ignored, not an error
    device.reset()
    device.close()


def test_a_device_must_say_how_it_handles_a_chain() -> None:
    with pytest.raises(NotImplementedError):
        Device().handle(0, Chain(0), FakeMemory())


def test_attach_gives_the_device_the_back_ends_wake_up() -> None:
    device, woken = Device(), []
    device.wake(0)  # before attach: a no-op
    device.attach(woken.append)
    device.wake(3)
    assert woken == [3]
    assert base.Device.queue_size_max == 1024
