"""The real proxy and recorder, with snapshots, between fake peers; and a fake guest.

tests/record/harness.py's ProxyHarness with the snapshot options of ``vhtrace record``,
and a guest memory (a memfd) in which the test lays out a split ring the way a driver
does, and changes it the way a device would.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from tests.record.harness import Peer, ProxyHarness
from vhtrace.memory import triggers
from vhtrace.memory.recording import SnapshotConfig
from vhtrace.protocol import spec
from vhtrace.protocol.messages import build
from vhtrace.trace.records import Record

MiB = 1 << 20
UADDR = 0x7F0000000000
GUEST_SIZE = 16 * MiB
NUM = 8
DESC, AVAIL, USED = 0x10000, 0x10800, 0x11000
FEATURES = (
    1 << spec.VIRTIO_F_PROTOCOL_FEATURES
    | 1 << spec.VIRTIO_F_VERSION_1
    | 1 << spec.VIRTIO_F_INDIRECT_DESC
)
PROTOCOL = 1 << spec.ProtocolFeature.CONFIGURE_MEM_SLOTS | 1 << spec.ProtocolFeature.INFLIGHT_SHMFD


class SnapshotHarness(ProxyHarness):
    """Proxy + recorder with snapshots in this process (so tests can count its fds)."""

    def __init__(
        self,
        directory: Path,
        snapshot: str = triggers.DEFAULT,
        memory: str = "rings",
        hold_ms: float = 1000,
    ) -> None:
        self.config = SnapshotConfig(triggers.parse(snapshot), memory, hold_seconds=hold_ms / 1000)
        super().__init__(directory, snapshots=self.config)

    def records(self) -> list[Record]:  # type: ignore[override]
        """The trace's records; a snapshot test's trace must be whole."""
        records, problem = super().records()
        assert problem is None, problem
        return records


class Guest:
    """A memfd as guest RAM at gpa 0 with a split ring of NUM entries."""

    def __init__(self, size: int = GUEST_SIZE) -> None:
        self.fd = os.memfd_create("guest-ram", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.size = size
        self.avail_idx = 0

    def write(self, gpa: int, data: bytes) -> None:
        os.pwrite(self.fd, data, gpa)

    def desc(self, index: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
        self.write(DESC + 16 * index, struct.pack("<QIHH", addr, length, flags, nxt))

    def make_available(self, head: int) -> None:
        self.write(AVAIL + 4 + 2 * (self.avail_idx % NUM), struct.pack("<H", head))
        self.avail_idx += 1
        self.write(AVAIL + 2, struct.pack("<H", self.avail_idx))

    def use(self, used_idx: int, entries: list[tuple[int, int]]) -> None:
        """What a device does: write used entries, then publish used.idx."""
        for i, (ident, length) in enumerate(entries):
            slot = (used_idx - len(entries) + i) % NUM
            self.write(USED + 4 + 8 * slot, struct.pack("<II", ident, length))
        self.write(USED + 2, struct.pack("<H", used_idx))

    def close(self) -> None:
        os.close(self.fd)


GPA_PROTOCOL = PROTOCOL | 1 << spec.ProtocolFeature.GPA_ADDRESSES | 1 << spec.ProtocolFeature.SHMEM
"""With GPA_ADDRESSES (and SHMEM, as a QEMU >= 11.1 back-end offers both)."""


def region(size: int = GUEST_SIZE, uaddr: int = UADDR) -> dict:
    return {
        "padding": 0,
        "guest_phys_addr": 0,
        "memory_size": size,
        "userspace_addr": uaddr,
        "mmap_offset": 0,
    }


def exchange(
    fe: Peer,
    be: Peer,
    name: str,
    fields: dict | None = None,
    reply: dict | None = None,
    fds: tuple[int, ...] = (),
) -> None:
    """The front-end sends a request (the back-end gets it) and, if given, the reply."""
    fe.send(build(name, fields, fds=fds))
    got = be.read()
    for fd in got.fds:
        os.close(fd)
    if reply is not None:
        be.send(build(name, reply, reply=True))
        fe.read()


def start_device(fe: Peer, be: Peer, guest: Guest, gpa_addresses: bool = False) -> None:
    """Negotiation, the memory region, ring 0 configured and started. With
    ``gpa_addresses``, GPA_ADDRESSES is negotiated: the region's userspace_addr is its
    guest_phys_addr and the ring addresses are guest-physical (vhost-user.rst)."""
    protocol = GPA_PROTOCOL if gpa_addresses else PROTOCOL
    base = 0 if gpa_addresses else UADDR
    exchange(fe, be, "GET_FEATURES", reply={"features": FEATURES})
    exchange(fe, be, "GET_PROTOCOL_FEATURES", reply={"features": protocol})
    exchange(fe, be, "SET_PROTOCOL_FEATURES", {"features": protocol})
    exchange(fe, be, "SET_FEATURES", {"features": FEATURES})
    exchange(fe, be, "ADD_MEM_REG", region(guest.size, uaddr=base), fds=(guest.fd,))
    exchange(fe, be, "SET_VRING_NUM", {"index": 0, "num": NUM})
    exchange(fe, be, "SET_VRING_BASE", {"index": 0, "num": 0})
    exchange(
        fe,
        be,
        "SET_VRING_ADDR",
        {
            "index": 0,
            "flags": 0,
            "desc_user_addr": base + DESC,
            "used_user_addr": base + USED,
            "avail_user_addr": base + AVAIL,
            "log_guest_addr": 0,
        },
    )
    kick = os.eventfd(0)
    exchange(fe, be, "SET_VRING_KICK", {"index": 0}, fds=(kick,))
    os.close(kick)
    exchange(fe, be, "SET_VRING_ENABLE", {"index": 0, "num": 1})
