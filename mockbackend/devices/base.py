"""What a device model gives the back-end: identity, features, config space, request handling.

The back-end owns the vhost-user side (negotiation, memory, rings); a device only says
which virtio feature bits it offers, what its config space holds and what to do with one
descriptor chain of one of its queues. It never sees a socket.
"""

from __future__ import annotations

from collections.abc import Callable

from mockbackend.virtqueue import Chain, MemoryAccess
from vhtrace.protocol import spec

TRANSPORT_FEATURES = (
    1 << spec.VIRTIO_F_VERSION_1
    | 1 << spec.VIRTIO_F_INDIRECT_DESC
    | 1 << spec.VIRTIO_F_EVENT_IDX
    | 1 << 24  # NOTIFY_ON_EMPTY
    | 1 << spec.VIRTIO_F_LOG_ALL
)
PACKED = 1 << spec.VIRTIO_F_RING_PACKED
"""Not offered by default: add it to a device's (or the script's) features to offer it."""
"""Ring and transport bits every device here supports (as libvhost-user offers them)."""


class Device:
    """Base class of a device model."""

    name = "device"
    virtio_id = 0
    num_queues = 1
    queue_size_max = 1024

    def __init__(self) -> None:
        self.wake: Callable[[int], None] = lambda queue: None
        self.features = TRANSPORT_FEATURES
        """Every virtio bit offered in GET_FEATURES (vhost's PROTOCOL_FEATURES is added
        by the back-end)."""

    def config(self) -> bytes:
        """The device's config space (GET_CONFIG reads a window of it)."""
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        """SET_CONFIG: the driver wrote its writable config fields."""

    @property
    def reported_queues(self) -> int:
        """GET_QUEUE_NUM's answer (net counts queue pairs)."""
        return self.num_queues

    def ready(self, queue: int) -> bool:
        """Whether a chain of ``queue`` can be used now (net's receive queue waits for
        frames); chains are left in the ring until it is."""
        return True

    def handle(self, queue: int, chain: Chain, mem: MemoryAccess) -> int:
        """Process one chain of ``queue``; the number of bytes written into it."""
        raise NotImplementedError

    def attach(self, wake: Callable[[int], None]) -> None:
        """The back-end's way to have a queue processed again (after ``ready`` changed)."""
        self.wake = wake

    def reset(self) -> None:
        """The front-end reset the device (RESET_DEVICE, RESET_OWNER)."""

    def close(self) -> None:
        """Release what the device holds (files)."""
