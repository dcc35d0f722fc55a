"""A fake vhost-user front-end for tests and benchmarks: a socketpair, guest RAM in a
memfd, a driver.

The mock back-end runs its :class:`~mockbackend.loop.ConnectionLoop` on a thread over one end
of a socketpair; the test speaks the protocol on the other end with the protocol model's
encoder, exactly as QEMU would (fds on the header's first byte). :class:`Driver` plays
the guest's virtio driver: it writes descriptors and avail entries into the memfd and
reads the used ring, so virtqueue processing is exercised end to end without QEMU.

Installed on purpose: it is documented API for mock back-end script authors, who test
their scripts without QEMU (docs/mockbackend.md, "Testing without QEMU"); the unit tests
and bench_mockbackend.py use it the same way.
"""

from __future__ import annotations

import mmap
import os
import socket
import threading
import time
from dataclasses import dataclass

from mockbackend.connection_report import Report
from mockbackend.context import Context
from mockbackend.loop import ConnectionLoop
from mockbackend.script import Script
from vhtrace import wire
from vhtrace.protocol import payloads, spec, virtio
from vhtrace.protocol.connection import Connection
from vhtrace.protocol.framing import Frame

MiB = 1 << 20
GUEST_SIZE = 4 * MiB
UADDR = 0x7F00_0000_0000
"""The 'front-end user address' of guest RAM (never dereferenced by anyone)."""


class FakeFrontend:
    """Speaks to a mock back-end connection served on a thread."""

    def __init__(self, script: Script) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.loop = ConnectionLoop(theirs, script)
        self.ctx: Context = self.loop.ctx
        """The mock's side of the connection (what its handlers see as ``ctx``)."""
        self.report: Report | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.connection = Connection(spec.Side.FRONTEND)
        self.reader = wire.ConnectionReader(self.sock, self.connection)
        self.mem_fd = os.memfd_create("guest", os.MFD_CLOEXEC)
        os.ftruncate(self.mem_fd, GUEST_SIZE)
        self.ram = mmap.mmap(self.mem_fd, GUEST_SIZE)

    def _run(self) -> None:
        self.report = self.loop.run()

    # -- messages ------------------------------------------------------------------

    def send(
        self,
        name: str,
        fields: dict | None = None,
        *,
        need_reply: bool = False,
        fds: tuple[int, ...] = (),
    ) -> None:
        frame, _ = self.connection.send(name, fields, need_reply=need_reply, fds=fds)
        wire.send_frame(self.sock, frame)

    def send_frame(self, frame: Frame) -> None:
        self.connection.sending(frame)
        wire.send_frame(self.sock, frame)

    def read(self) -> Frame:
        received = self.reader.read()
        assert received is not None, "the back-end closed the connection"
        return received.frame

    def ask(
        self,
        name: str,
        fields: dict | None = None,
        *,
        fds: tuple[int, ...] = (),
        need_reply: bool = False,
        layout: str | None = None,
    ) -> dict:
        """Send a request and decode its reply with the reply layout."""
        self.send(name, fields, need_reply=need_reply, fds=fds)
        frame = self.read()
        row = spec.request_spec(spec.Channel.MAIN, frame.request)
        assert row is not None and frame.flags == spec.REPLY_FLAGS, frame
        wire.close_fds(frame.fds)
        chosen = layout or ("ack" if need_reply and row.reply is spec.Reply.ACK else None)
        decoded = payloads.decode(chosen or row.reply_payload, frame.payload)
        assert decoded.fields is not None, decoded.error
        return decoded.fields

    def close(self) -> Report:
        self.sock.close()
        self.thread.join(10)
        assert self.report is not None, "the connection did not end"
        self.ram.close()
        os.close(self.mem_fd)
        return self.report

    # -- a typical start-up ---------------------------------------------------------------

    def negotiate(self, protocol_features: int | None = None) -> tuple[int, int]:
        """GET/SET_FEATURES and protocol features as QEMU does; (features, protocol)."""
        features = self.ask("GET_FEATURES")["features"]
        offered = self.ask("GET_PROTOCOL_FEATURES")["features"]
        chosen = offered if protocol_features is None else protocol_features & offered
        self.send("SET_PROTOCOL_FEATURES", {"features": chosen})
        self.send("SET_OWNER")
        self.send("SET_FEATURES", {"features": features})
        return features, chosen

    def set_mem_table(self) -> None:
        region = {
            "guest_phys_addr": 0,
            "memory_size": GUEST_SIZE,
            "userspace_addr": UADDR,
            "mmap_offset": 0,
        }
        self.ask(
            "SET_MEM_TABLE",
            {"nregions": 1, "regions": [region]},
            fds=(self.mem_fd,),
            need_reply=True,
        )

    def start_ring(self, index: int, driver: Driver) -> tuple[int, int]:
        """Configure and start a ring; (kick eventfd, call eventfd) kept by the test."""
        kick = os.eventfd(0, os.EFD_CLOEXEC)
        call = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.send("SET_VRING_NUM", {"index": index, "num": driver.size})
        self.send("SET_VRING_BASE", {"index": index, "next_avail": 0})
        self.send(
            "SET_VRING_ADDR",
            {
                "index": index,
                "flags": 0,
                "desc_user_addr": UADDR + driver.desc,
                "used_user_addr": UADDR + driver.used,
                "avail_user_addr": UADDR + driver.avail,
                "log_guest_addr": 0,
            },
        )
        self.send("SET_VRING_CALL", {"index": index}, fds=(call,))
        self.send("SET_VRING_KICK", {"index": index}, fds=(kick,))
        self.ask("SET_VRING_ENABLE", {"index": index, "num": 1}, need_reply=True)
        return kick, call


@dataclass
class Driver:
    """The guest's side of one split ring in the fake front-end's RAM."""

    ram: mmap.mmap
    size: int = 16
    desc: int = 0x10000
    avail: int = 0x20000
    used: int = 0x30000
    data: int = 0x100000
    avail_idx: int = 0
    next_desc: int = 0
    next_data: int = 0

    def buffer(self, data: bytes | int) -> int:
        """Room in guest RAM holding ``data`` (or that many zero bytes); its GPA."""
        payload = bytes(data) if isinstance(data, int) else data
        addr = self.data + self.next_data
        self.ram[addr : addr + len(payload)] = payload
        self.next_data += (len(payload) + 15) // 16 * 16
        return addr

    def write_desc(
        self, index: int, addr: int, length: int, flags: int, nxt: int, table: int | None = None
    ) -> None:
        base = (self.desc if table is None else table) + virtio.DESC_SIZE * index
        virtio.DESC.pack_into(self.ram, base, addr, length, flags, nxt)

    def chain(self, parts: list[tuple[int, int, bool]]) -> int:
        """Descriptors for (addr, len, writable) parts, chained; the head index."""
        head = self.next_desc
        for i, (addr, length, writable) in enumerate(parts):
            index = self.next_desc
            self.next_desc += 1
            last = i == len(parts) - 1
            flags = (virtio.DESC_F_WRITE if writable else 0) | (0 if last else virtio.DESC_F_NEXT)
            self.write_desc(index, addr, length, flags, index + 1)
        return head

    def make_available(self, head: int) -> None:
        slot = self.avail + virtio.avail_entry_offset(self.avail_idx % self.size)
        virtio.U16.pack_into(self.ram, slot, head)
        self.avail_idx = (self.avail_idx + 1) & virtio.INDEX_MASK
        virtio.U16.pack_into(self.ram, self.avail + virtio.RING_IDX_OFFSET, self.avail_idx)

    def used_idx(self) -> int:
        return virtio.U16.unpack_from(self.ram, self.used + virtio.RING_IDX_OFFSET)[0]

    def used_entry(self, slot: int) -> tuple[int, int]:
        at = self.used + virtio.used_elem_offset(slot % self.size)
        return virtio.USED_ELEM.unpack_from(self.ram, at)

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.ram[addr : addr + length])


def kick(fd: int) -> None:
    """The guest's notification: one write to the kick eventfd."""
    os.write(fd, (1).to_bytes(8, "little"))


def wait_used(driver: Driver, count: int, timeout: float = 5.0) -> None:
    """Wait until the device has returned ``count`` chains in total."""
    deadline = time.monotonic() + timeout
    while driver.used_idx() < count:
        assert time.monotonic() < deadline, f"used idx {driver.used_idx()} never reached {count}"
        time.sleep(0.005)
