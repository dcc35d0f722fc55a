"""Benchmarks of the mock back-end, printed as one table.

* guest sequential read: a Linux guest under QEMU (TCG) reads its whole disk with
  ``dd bs=1M iflag=direct``, timed inside the guest, once with the mock back-end and
  once with qemu-storage-daemon on the same image (the disk is read PASSES times, so that
  the guest's 10 ms clock does not dominate); and the ratio;
* per-request latency of the mock itself, without QEMU: a fake front-end over a
  socketpair times control-message round trips (GET_FEATURES) and 4 KiB virtio-blk
  reads (kick -> used ring).

Run: ``python benchmarks/bench_mockbackend.py [--size-mib 128] [--requests 2000]``.
Not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from mockbackend import BlkDevice, MockBackend, Script
from mockbackend.testing import Driver, FakeFrontend, kick
from vhtrace.lab import VhostUserDevice, Workspace, images, missing

MiB = 1 << 20

PASSES = 4
READ_SNIPPET = f"""
wait_dev /dev/vda
_t0=$(cut -d' ' -f1 /proc/uptime)
for _p in $(seq {PASSES}); do dd if=/dev/vda of=/dev/null bs=1M iflag=direct status=none; done
_t1=$(cut -d' ' -f1 /proc/uptime)
vht read_start "$_t0"
vht read_end "$_t1"
"""


def guest_read_seconds(lab: Workspace, image: Path, backend: str) -> float:
    """Seconds the guest needs to read the whole disk PASSES times through ``backend``."""
    initrd = lab.initramfs(READ_SNIPPET, devices=("blk",))
    sock = lab.sock(backend)
    if backend == "mock":
        server = MockBackend(Script(BlkDevice(image))).start(sock)
        stop = server.stop
    else:
        stop = lab.qsd(image, name="qsd", socket=sock).stop
    try:
        with lab.qemu(initrd, [VhostUserDevice("blk", sock)], name=f"qemu-{backend}") as vm:
            markers = vm.finish(timeout=600)
    finally:
        stop()
    return float(markers["read_end"] or 0) - float(markers["read_start"] or 0)


def control_latency(requests: int) -> list[float]:
    """Round-trip seconds of GET_FEATURES against the mock over a socketpair."""
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "d.img"
        image.write_bytes(bytes(MiB))
        fe = FakeFrontend(Script(BlkDevice(image)))
        samples = []
        for _ in range(requests):
            start = time.perf_counter()
            fe.ask("GET_FEATURES")
            samples.append(time.perf_counter() - start)
        fe.close()
    return samples


def blk_latency(requests: int) -> list[float]:
    """Seconds from kick to used-ring entry for 4 KiB reads, one request at a time."""
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "d.img"
        image.write_bytes(os.urandom(4 * MiB))
        fe = FakeFrontend(Script(BlkDevice(image)))
        fe.negotiate()
        fe.set_mem_table()
        driver = Driver(fe.ram, size=256)
        kick_fd, call_fd = fe.start_ring(0, driver)
        header = driver.buffer(16)
        data = driver.buffer(4096)
        status = driver.buffer(1)
        samples = []
        for i in range(requests):
            struct.pack_into("<IIQ", fe.ram, header, 0, 0, (i * 8) % (4 * MiB // 512 - 8))
            driver.next_desc = 0
            head = driver.chain([(header, 16, False), (data, 4096, True), (status, 1, True)])
            # used_event: interrupt me when this request's entry is used (event idx)
            struct.pack_into("<H", fe.ram, driver.avail + 4 + 2 * driver.size, i & 0xFFFF)
            start = time.perf_counter()
            driver.make_available(head)
            kick(kick_fd)
            if not select.select([call_fd], [], [], 5)[0]:
                raise RuntimeError(f"no interrupt for request {i}")
            os.read(call_fd, 8)
            samples.append(time.perf_counter() - start)
            if driver.used_idx() != (i + 1) & 0xFFFF:
                raise RuntimeError(f"interrupt before request {i} was used")
        os.close(kick_fd)
        os.close(call_fd)
        fe.close()
    return samples


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="disk size for the read test")
    parser.add_argument("--requests", type=int, default=2000, help="requests per latency test")
    args = parser.parse_args()

    rows: list[tuple[str, str]] = []
    absent = missing("qemu", "qsd", "qemu-img", "busybox", "kernel")
    if absent:
        rows.append(("guest sequential read", "not run: " + "; ".join(absent)))
    else:
        size = args.size_mib * MiB * PASSES
        with (
            tempfile.TemporaryDirectory() as data,
            tempfile.TemporaryDirectory() as cache,
            Workspace(Path(data), Path(cache)) as lab,
        ):
            image = images.create_image(lab.path("disk.img"), args.size_mib * MiB)
            images.fill_random(image, 1)
            mock_s = guest_read_seconds(lab, image, "mock")
            qsd_s = guest_read_seconds(lab, image, "qsd")
        mock_rate, qsd_rate = size / mock_s / MiB, size / qsd_s / MiB
        rows += [
            (f"guest seq read {size // MiB} MiB, mockbackend", f"{mock_rate:8.1f} MiB/s"),
            (f"guest seq read {size // MiB} MiB, qemu-storage-daemon", f"{qsd_rate:8.1f} MiB/s"),
            ("mockbackend / qemu-storage-daemon", f"{mock_rate / qsd_rate:8.2f} x"),
        ]
    for name, samples in (
        ("GET_FEATURES round trip", control_latency(args.requests)),
        ("virtio-blk 4 KiB read, kick -> used", blk_latency(args.requests)),
    ):
        rows.append(
            (
                f"mockbackend {name}",
                f"median {statistics.median(samples) * 1e6:7.1f} us, "
                f"p99 {percentile(samples, 99) * 1e6:7.1f} us",
            )
        )
    width = max(len(name) for name, _ in rows)
    print(f"{'benchmark':<{width}}  result")
    print(f"{'-' * width}  {'-' * 36}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
