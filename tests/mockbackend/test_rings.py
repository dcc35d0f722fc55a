"""One ring of the mock: its eventfds, the worker that waits on kicks, processing a queue."""

from __future__ import annotations

import os
import threading

import pytest

from mockbackend.rings import Ring, RingWorker, close_fd, process_ring
from mockbackend.virtqueue import VirtqueueError


def counter(fd: int) -> int:
    """An eventfd's count, read (and so reset) without blocking."""
    try:
        return int.from_bytes(os.read(fd, 8), "little")
    except BlockingIOError:
        return 0


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def test_signal_writes_the_call_eventfd_else_goes_in_band() -> None:
    ring, call = Ring(0), eventfd()
    inband: list[int] = []
    ring.signal(inband.append)
    assert inband == [0]
    ring.set_call(call)
    ring.signal(inband.append)
    ring.signal(inband.append)
    assert counter(call) == 2 and inband == [0]
    ring.close()
    with pytest.raises(OSError):
        os.fstat(call)  # the ring closed it


def test_replacing_an_eventfd_closes_the_old_one() -> None:
    ring, first, second = Ring(1), eventfd(), eventfd()
    ring.set_err(first)
    ring.set_err(second)
    with pytest.raises(OSError):
        os.fstat(first)
    ring.signal_error()
    assert counter(second) == 1
    ring.close()
    close_fd(None)  # nothing to close is fine


class FakeQueue:
    """Chains 1..n available; records what was pushed."""

    def __init__(self, n: int, notify: bool = True, fail_at: int | None = None) -> None:
        self.chains = list(range(1, n + 1))
        self.pushed: list[tuple[int, int]] = []
        self.notify, self.fail_at = notify, fail_at

    def pop(self) -> int | None:
        if self.fail_at is not None and len(self.pushed) == self.fail_at:
            raise VirtqueueError("desc 3: loop in the chain")
        return self.chains.pop(0) if self.chains else None

    def push(self, chain: int, written: int) -> None:
        self.pushed.append((chain, written))

    def should_notify(self) -> bool:
        return self.notify


def enabled_ring(queue: FakeQueue) -> Ring:
    ring = Ring(0, enabled=True, queue=queue)  # type: ignore[arg-type]
    ring.set_call(eventfd())
    return ring


def test_every_available_chain_is_handled_pushed_and_notified_once() -> None:
    queue = FakeQueue(3)
    ring = enabled_ring(queue)
    process_ring(ring, lambda index, chain: 10 * chain, lambda ring, text: None)
    assert queue.pushed == [(1, 10), (2, 20), (3, 30)] and ring.processed == 3
    assert ring.call_fd is not None and counter(ring.call_fd) == 1
    ring.close()


def test_a_disabled_ring_or_a_device_not_ready_is_left_alone() -> None:
    queue = FakeQueue(2)
    ring = enabled_ring(queue)
    process_ring(ring, lambda i, c: 0, lambda r, t: None, ready=lambda index: False)
    ring.enabled = False
    process_ring(ring, lambda i, c: 0, lambda r, t: None)
    assert queue.pushed == [] and ring.call_fd is not None and counter(ring.call_fd) == 0
    ring.close()


def test_a_bad_ring_is_broken_reported_and_signalled_on_err() -> None:
    queue = FakeQueue(5, fail_at=1)
    ring = enabled_ring(queue)
    ring.set_err(eventfd())
    errors: list[str] = []
    process_ring(ring, lambda i, c: 1, lambda r, text: errors.append(text))
    assert errors == ["desc 3: loop in the chain"] and ring.broken == errors[0]
    assert ring.err_fd is not None and counter(ring.err_fd) == 1
    process_ring(ring, lambda i, c: 1, lambda r, text: errors.append(text))
    assert len(queue.pushed) == 1  # broken: never processed again
    ring.close()


def test_a_device_that_raises_breaks_the_ring_not_the_mock() -> None:
    queue = FakeQueue(2)
    ring = enabled_ring(queue)
    errors: list[str] = []

    def buggy(index: int, chain: object) -> int:
        raise ZeroDivisionError("oops")

    process_ring(ring, buggy, lambda r, text: errors.append(text))
    assert ring.broken == "device raised ZeroDivisionError('oops')" and errors == [ring.broken]
    ring.close()


def test_the_worker_processes_at_start_and_on_each_kick_until_stopped() -> None:
    ring, kick = Ring(0), eventfd()
    ring.kick_fd = kick
    runs = threading.Semaphore(0)
    worker = RingWorker(ring, lambda r: runs.release())
    worker.start()
    assert runs.acquire(timeout=5)  # the newest spec: start as if kicked
    os.write(kick, (1).to_bytes(8, "little"))
    assert runs.acquire(timeout=5)
    worker.wake()
    assert runs.acquire(timeout=5)
    worker.stop()
    assert not worker.is_alive()
    ring.close()
