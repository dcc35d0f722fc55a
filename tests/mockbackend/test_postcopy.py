"""Postcopy: the memory-table exchange with the front-end."""

from __future__ import annotations

import struct

from mockbackend import BlkDevice, Script
from mockbackend.testing import GUEST_SIZE, UADDR, FakeFrontend
from vhtrace import wire
from vhtrace.protocol import spec
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import ProtocolFeature


def test_postcopy_memory_table_exchange(image) -> None:
    script = Script(BlkDevice(image)).postcopy()
    fe = FakeFrontend(script)
    _, chosen = fe.negotiate()
    assert chosen >> ProtocolFeature.PAGEFAULT & 1
    assert not chosen >> ProtocolFeature.CONFIGURE_MEM_SLOTS & 1
    fe.send("POSTCOPY_ADVISE")
    advise = fe.read()
    assert (advise.request, advise.size, len(advise.fds)) == (28, 0, 1)
    wire.close_fds(advise.fds)
    assert fe.ask("POSTCOPY_LISTEN", need_reply=True, layout="u64") == {"value": 0}
    region = {
        "guest_phys_addr": 0,
        "memory_size": GUEST_SIZE,
        "userspace_addr": UADDR,
        "mmap_offset": 0,
    }
    request = build("SET_MEM_TABLE", {"nregions": 1, "regions": [region]}, fds=(fe.mem_fd,))
    wire.send_frame(fe.sock, request)
    table = fe.read()
    assert (table.request, table.flags, table.size) == (5, spec.REPLY_FLAGS, request.size)
    nregions, _, gpa, size, client_base, _ = struct.unpack("<IIQQQQ", table.payload)
    assert (nregions, gpa, size) == (1, 0, GUEST_SIZE) and client_base not in (0, UADDR)
    fe.ram[0:4] = b"page"  # "arrived" in the shared memfd before registration
    wire.send_frame(fe.sock, build("SET_MEM_TABLE", {"value": 0}, layout="ack"))  # the ack
    fe.ask("GET_FEATURES")
    assert fe.ctx.memory.read(0, 4) == b"page"  # registered and readable
    assert fe.ask("POSTCOPY_END", need_reply=True, layout="u64") == {"value": 0}
    report = fe.close()
    assert report.errors == []
    assert not [f for f in report.violations if f.severity == "error"], report.violations
