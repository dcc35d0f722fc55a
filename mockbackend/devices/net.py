"""virtio-net loopback: every frame the guest sends comes back to it on its receive queue.

Queue 0 receives, queue 1 transmits (one queue pair). A transmitted chain is a 12-byte
virtio_net_hdr_v1 and the frame; the frame is queued (at most :data:`BACKLOG`, older ones
dropped) and delivered into the next receive buffer, after a zeroed header with
``num_buffers`` = 1. The receive queue is only popped while a frame waits, so buffers the
driver posted stay in the ring until there is something to put in them.
"""

from __future__ import annotations

import struct
import threading
from collections import deque

from mockbackend.devices.base import Device
from mockbackend.virtqueue import Chain, MemoryAccess, gather, scatter

RX, TX = 0, 1
HEADER = 12
BACKLOG = 256
MAX_FRAME = 65550
F_MAC = 5
F_STATUS = 16


class NetLoopback(Device):
    name = "net"
    virtio_id = 1
    num_queues = 2

    def __init__(self) -> None:
        super().__init__()
        self.backlog: deque[bytes] = deque(maxlen=BACKLOG)
        self._lock = threading.Lock()
        self.sent = 0
        self.delivered = 0

    @property
    def reported_queues(self) -> int:
        return self.num_queues // 2

    def ready(self, queue: int) -> bool:
        return queue != RX or bool(self.backlog)

    def handle(self, queue: int, chain: Chain, mem: MemoryAccess) -> int:
        if queue == TX:
            length = min(chain.readable_bytes, HEADER + MAX_FRAME)
            if length > HEADER:
                with self._lock:
                    self.backlog.append(gather(mem, chain.readable, HEADER, length - HEADER))
                self.sent += 1
                self.wake(RX)
            return 0
        with self._lock:
            frame = self.backlog.popleft() if self.backlog else None
        if frame is None:
            return 0
        header = struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 1)  # num_buffers = 1
        written = scatter(mem, chain.writable, 0, header + frame)
        self.delivered += 1
        return written
