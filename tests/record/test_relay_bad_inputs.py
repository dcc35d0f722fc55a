"""The 20 malformed inputs of bad-inputs.md, sent through the recording proxy.

Each must be forwarded unchanged (the proxy is transparent), recorded with the finding
that names it, and leave the proxy working (a normal message still gets through) with
no fd kept and no allocation driven by the wire.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.record.harness import Peer, ProxyHarness, open_fds
from tests.record.test_relay import ALL_PROTOCOL, FEATURES, messages, negotiate
from vhtrace.analysis import AnalysedMessage, Analyser, LateFindings
from vhtrace.protocol import spec
from vhtrace.protocol.framing import pack_header
from vhtrace.protocol.messages import build
from vhtrace.trace.records import FindingRecord

GiB = 1 << 30
REGION = {"guest_phys_addr": 0, "memory_size": GiB, "userspace_addr": 1 << 40, "mmap_offset": 0}


def table(*regions: dict, nregions: int | None = None) -> bytes:
    return build("SET_MEM_TABLE", {"nregions": len(regions) if nregions is None else nregions,
                                   "regions": list(regions)}).raw  # fmt: skip


@dataclass
class Row:
    number: int
    what: str
    send: Callable[[Peer, Peer], list[bytes]]
    """Sends the input through the proxy; returns the raw messages the back-end must get."""
    code: str | None
    """The finding code the trace must show (None: a valid input, no finding allowed)."""


def fe_sends(*raws: bytes, fds_per: int = 0) -> Callable[[Peer, Peer], list[bytes]]:
    def send(fe: Peer, be: Peer) -> list[bytes]:
        for raw in raws:
            fds = tuple(os.eventfd(0) for _ in range(fds_per))
            fe.send_raw(raw, fds)
            for fd in fds:
                os.close(fd)
        got = []
        for _ in raws:
            frame = be.read()
            for fd in frame.fds:
                os.close(fd)
            got.append(frame.raw)
        return got

    return send


def with_memfd(raw: bytes, count: int = 1) -> Callable[[Peer, Peer], list[bytes]]:
    def send(fe: Peer, be: Peer) -> list[bytes]:
        fds = tuple(os.memfd_create(f"r{i}") for i in range(count))
        fe.send_raw(raw, fds)
        for fd in fds:
            os.close(fd)
        frame = be.read()
        assert len(frame.fds) == count
        for fd in frame.fds:
            os.close(fd)
        return [frame.raw]

    return send


def vring_num(index: int, num: int) -> bytes:
    return build("SET_VRING_NUM", {"index": index, "num": num}).raw


def queue_num_then(raw: bytes) -> Callable[[Peer, Peer], list[bytes]]:
    """The back-end says it has 1 queue, then the front-end sends ``raw``."""

    def send(fe: Peer, be: Peer) -> list[bytes]:
        fe.send(build("GET_QUEUE_NUM"))
        be.read()
        be.send(build("GET_QUEUE_NUM", {"value": 1}, reply=True))
        fe.read()
        return fe_sends(raw)(fe, be)

    return send


def ring_crossing_region(fe: Peer, be: Peer) -> list[bytes]:
    sent = with_memfd(build("SET_MEM_TABLE", {"nregions": 1, "regions": [REGION]}).raw)(fe, be)
    addr = REGION["userspace_addr"] + GiB - 100  # starts inside, runs past the end
    raw = build("SET_VRING_ADDR", {"index": 0, "flags": 0, "desc_user_addr": addr,
                                   "used_user_addr": 1 << 40, "avail_user_addr": 1 << 40,
                                   "log_guest_addr": 0}).raw  # fmt: skip
    return sent + fe_sends(vring_num(0, 256), raw)(fe, be)


def short_header_then_close(fe: Peer, be: Peer) -> list[bytes]:
    fd = os.eventfd(0)
    fe.send_raw(pack_header(1, 1, 0)[:5], (fd,))
    os.close(fd)
    fe.close()
    data = be.read_bytes(5)
    assert be.closed_by_peer()
    return [data]


def huge_size(fe: Peer, be: Peer) -> list[bytes]:
    raw = pack_header(1, 1, 0xFFFFFFFF) + b"x" * 1000
    fe.send_raw(raw)
    return [be.read_bytes(len(raw))]


def backend_offers_bit_21(fe: Peer, be: Peer) -> list[bytes]:
    fe.send(build("GET_PROTOCOL_FEATURES"))
    be.read()
    reply = build("GET_PROTOCOL_FEATURES", {"features": 1 << 21}, reply=True)
    be.send(reply)
    return [fe.read().raw]


def coalesced_with_fds(fe: Peer, be: Peer) -> list[bytes]:
    fds = tuple(os.memfd_create(f"c{i}") for i in range(2))
    mem = table(REGION, {**REGION, "guest_phys_addr": 4 * GiB, "userspace_addr": 2 << 40})
    fe.send_raw(build("SET_PROTOCOL_FEATURES", {"features": ALL_PROTOCOL}).raw)
    fe.send_raw(build("SET_OWNER").raw)
    fe.send_raw(mem, fds)
    for fd in fds:
        os.close(fd)
    got = [be.read() for _ in range(3)]
    assert [len(g.fds) for g in got] == [0, 0, 2]
    for fd in got[2].fds:
        os.close(fd)
    return [g.raw for g in got]


ROWS = [
    Row(1, "GET_FEATURES with 8 fds, in a loop", fe_sends(*[build("GET_FEATURES").raw] * 20,
                                                          fds_per=8), "fd-count"),
    Row(2, "repeated SET_VRING_NUM", fe_sends(vring_num(0, 256), vring_num(0, 256)),
        "ring-repeat"),
    Row(3, "SET_LOG_BASE size+offset wrapping", with_memfd(build("SET_LOG_BASE", {
        "mmap_size": 0xFFFFFFFFFFFFF000, "mmap_offset": 0x2000}).raw), "log-overflow"),
    Row(4, "ring index with high bits", fe_sends(vring_num(0x10000, 256)), "ring-index"),
    Row(5, "crypto key_len above 64", fe_sends(build("CREATE_CRYPTO_SESSION", {
        "op_code": 0, "key_len": 65, "auth_key_len": 0}).raw), "crypto-key"),
    Row(6, "GET_INFLIGHT_FD repeated", fe_sends(*[build("GET_INFLIGHT_FD", {
        "num_queues": 1, "queue_size": 128}).raw] * 2), "inflight-repeat"),
    Row(7, "SET_INFLIGHT_FD num_queues 0xffff", with_memfd(build("SET_INFLIGHT_FD", {
        "mmap_size": 4096, "num_queues": 0xFFFF, "queue_size": 128}).raw), "inflight-queues"),
    Row(8, "GET_INFLIGHT_FD with extra fds", fe_sends(build("GET_INFLIGHT_FD", {
        "num_queues": 1, "queue_size": 128}).raw, fds_per=3), "fd-count"),
    Row(9, "ring crossing the end of its region", ring_crossing_region, "ring-address"),
    Row(10, "9 regions in SET_MEM_TABLE", fe_sends(table(*[
        {**REGION, "guest_phys_addr": i * GiB, "userspace_addr": (i + 1) << 40}
        for i in range(9)])), "region-count"),
    Row(11, "region size near 2^64", with_memfd(table({**REGION,
        "memory_size": 0xFFFFFFFFFFFFF000})), "region-overflow"),
    Row(12, "short header with an fd, then close", short_header_then_close, "incomplete"),
    Row(12, "size 0xFFFFFFFF", huge_size, "size-limit"),
    Row(13, "valid SET_MEM_TABLE with 2 regions and 2 fds", with_memfd(table(REGION, {
        **REGION, "guest_phys_addr": 4 * GiB, "userspace_addr": 2 << 40}), 2), None),
    Row(14, "SET_VRING_CALL with NOFD and no fd", fe_sends(build("SET_VRING_CALL", {
        "index": 0, "nofd": True}).raw), None),
    Row(15, "ring index beyond GET_QUEUE_NUM", queue_num_then(vring_num(5, 256)), "ring-index"),
    Row(16, "inflight area with last_batch_head >= desc_num", with_memfd(build(
        "SET_INFLIGHT_FD", {"mmap_size": 4096, "num_queues": 1, "queue_size": 128}).raw),
        None),  # shared-memory contents: passed through; decoding them is snapshot work
    Row(17, "SET_VRING_BASE index >= num_queues", queue_num_then(build("SET_VRING_BASE", {
        "index": 9, "num": 0}).raw), "ring-index"),
    Row(18, "request id 0xffffffff", fe_sends(pack_header(0xFFFFFFFF, 1, 0)), "unknown-request"),
    Row(19, "back-end offers bit 21 (rust-vmm SHMEM)", backend_offers_bit_21,
        "rust-vmm-shmem-bit"),
    Row(20, "coalesced requests with SET_MEM_TABLE's fds", coalesced_with_fds, None),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[f"row{r.number}-{r.code or 'valid'}" for r in ROWS])
def test_bad_input_is_forwarded_recorded_and_survived(tmp_path: Path, row: Row) -> None:
    harness = ProxyHarness(tmp_path)
    try:
        fe, be = harness.connect()
        if row.number != 19:
            negotiate(fe, be, set_protocol=row.number != 20)
        before = open_fds()
        forwarded = row.send(fe, be)
        if row.number != 12:
            # The proxy still relays normally afterwards.
            fe.send(build("GET_FEATURES"))
            assert be.read().request == 1
            be.send(build("GET_FEATURES", {"features": FEATURES}, reply=True))
            assert fe.read().request == 1
        records, _ = harness.records()
        after = open_fds()
    finally:
        harness.stop()
    assert after <= before | {harness.writer._fd}, "the proxy kept fds"
    recorded = [m.raw for m in messages(records)]
    for raw in forwarded:
        assert any(r == raw or raw.startswith(r) or r.startswith(raw) for r in recorded), (
            "a forwarded message is missing from the trace"
        )
    items = list(Analyser().run(records))
    codes = {f.code for i in items if isinstance(i, AnalysedMessage) for f in i.analysis.findings}
    codes |= {f.code for i in items if isinstance(i, LateFindings) for f in i.findings}
    codes |= {r.finding.code for r in records if isinstance(r, FindingRecord)}
    if row.code is None:
        errors = {f.code for i in items if isinstance(i, AnalysedMessage)
                  for f in i.analysis.findings if f.severity == "error"}  # fmt: skip
        assert errors == set(), row.what
    else:
        assert row.code in codes, f"row {row.number} ({row.what}): found {sorted(codes)}"


def test_wire_size_never_drives_allocation(tmp_path: Path) -> None:
    """A header claiming 4 GiB: the proxy streams it through and keeps at most 4 KiB."""
    import tracemalloc

    harness = ProxyHarness(tmp_path)
    try:
        fe, be = harness.connect()
        tracemalloc.start()
        payload = b"y" * (8 << 20)
        fe.send_raw(pack_header(1, 1, 0xFFFFFFFF))
        for start in range(0, len(payload), 1 << 16):
            fe.send_raw(payload[start : start + (1 << 16)])
            assert (
                len(be.read_bytes(min(1 << 16, len(payload) - start) + (12 if start == 0 else 0)))
                > 0
            )
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        harness.stop()
    assert peak < 4 * len(payload), f"peak {peak} bytes for an 8 MiB stream"
    assert struct.calcsize("<III") == spec.HEADER_SIZE
