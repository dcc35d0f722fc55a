"""The data plane: one thread per started ring, woken by its kick eventfd.

A ring starts with SET_VRING_KICK (the memory table and ring addresses are known by
then), is processed only while enabled, and stops with GET_VRING_BASE, whose reply is
the index the ring stopped at; stopping joins the thread, so every popped chain has been
pushed back by then. Guest interrupts go through the call eventfd (or, with
INBAND_NOTIFICATIONS and no call fd, a BACKEND_VRING_CALL message).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mockbackend.memory import AccessError
from mockbackend.packed import PackedQueue
from mockbackend.virtqueue import SplitQueue, VirtqueueError

log = logging.getLogger("mockbackend")

_ONE = (1).to_bytes(8, "little")


def close_fd(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass
class Ring:
    """What the front-end configured for one virtqueue, and its worker."""

    index: int
    num: int = 0
    desc: int = 0
    avail: int = 0
    used: int = 0
    log_addr: int = 0
    addr_flags: int = 0
    base: int = 0
    kick_fd: int | None = None
    call_fd: int | None = None
    err_fd: int | None = None
    enabled: bool = False
    started: bool = False
    broken: str | None = None
    queue: SplitQueue | PackedQueue | None = None
    worker: RingWorker | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the ring is processed; taken to pause it (memory table changes)."""
    call_lock: threading.Lock = field(default_factory=threading.Lock)
    processed: int = 0

    def set_call(self, fd: int | None) -> None:
        with self.call_lock:
            old, self.call_fd = self.call_fd, fd
        close_fd(old)

    def set_err(self, fd: int | None) -> None:
        old, self.err_fd = self.err_fd, fd
        close_fd(old)

    def signal(self, inband: Callable[[int], None] | None = None) -> None:
        """Interrupt the guest for this ring."""
        with self.call_lock:
            if self.call_fd is not None:
                try:
                    os.write(self.call_fd, _ONE)
                except OSError as exc:
                    log.warning("ring %d: call eventfd write failed: %s", self.index, exc)
                return
        if inband is not None:
            inband(self.index)

    def signal_error(self) -> None:
        if self.err_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.err_fd, _ONE)

    def close(self) -> None:
        close_fd(self.kick_fd)
        self.kick_fd = None
        self.set_call(None)
        self.set_err(None)


class RingWorker(threading.Thread):
    """Waits on the kick eventfd (and a wake-up eventfd) and processes the ring."""

    def __init__(self, ring: Ring, process: Callable[[Ring], None]) -> None:
        super().__init__(name=f"ring-{ring.index}", daemon=True)
        self.ring = ring
        self.process = process
        self.wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.stopping = False

    def wake(self) -> None:
        os.write(self.wake_fd, _ONE)

    def stop(self) -> None:
        self.stopping = True
        self.wake()
        if threading.current_thread() is not self:
            self.join()
        os.close(self.wake_fd)

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.wake_fd, select.POLLIN)
        kick = self.ring.kick_fd
        if kick is not None:
            poller.register(kick, select.POLLIN)
        self.process(self.ring)  # the newest spec: start as if kicked
        while not self.stopping:
            for fd, _ in poller.poll():
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(fd, 8)
            if self.stopping:
                break
            self.process(self.ring)


def process_ring(
    ring: Ring,
    handle: Callable[[int, object], int],
    on_error: Callable[[Ring, str], None],
    inband: Callable[[int], None] | None = None,
    ready: Callable[[int], bool] = lambda index: True,
) -> None:
    """Pop every available chain (while the device is ready for one), hand it to the
    device, push it back, notify."""
    with ring.lock:
        queue = ring.queue
        if queue is None or not ring.enabled or ring.broken:
            return
        pushed = False
        try:
            while ready(ring.index):
                chain = queue.pop()
                if chain is None:
                    break
                written = handle(ring.index, chain)
                queue.push(chain, written)
                ring.processed += 1
                pushed = True
        except (VirtqueueError, AccessError, ValueError) as exc:
            ring.broken = str(exc)  # what the guest put in the ring: refuse, say so
            on_error(ring, str(exc))
            ring.signal_error()
        except Exception as exc:  # a device (or a script's device) bug: report, not crash
            log.exception("ring %d: device failed", ring.index)
            ring.broken = f"device raised {exc!r}"
            on_error(ring, ring.broken)
            ring.signal_error()
        if pushed and queue.should_notify():
            ring.signal(inband)
