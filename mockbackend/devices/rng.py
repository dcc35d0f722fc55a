"""virtio-rng (entropy source): fills every writable buffer the guest offers.

The simplest real device: one queue, no config space, no feature bits of its own. The
source of bytes is a callable, so tests can make it deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mockbackend.devices.base import Device
from mockbackend.virtqueue import Chain, MemoryAccess, scatter


class RngDevice(Device):
    name = "rng"
    virtio_id = 4

    def __init__(self, source: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__()
        self.source = source
        self.bytes_served = 0

    def handle(self, queue: int, chain: Chain, mem: MemoryAccess) -> int:
        length = min(chain.writable_bytes, 1 << 16)
        written = scatter(mem, chain.writable, 0, self.source(length)) if length else 0
        self.bytes_served += written
        return written
