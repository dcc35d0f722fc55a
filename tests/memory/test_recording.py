"""Snapshots while recording: the real proxy and recorder between fake peers.

The fake guest (a memfd) holds a split ring that the test fills as a driver would;
the fake back-end completes requests as a device would. What the snapshots hold is
checked through the verbs users run: ``vhtrace rings --json`` and ``vhtrace memory``.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest

from tests.memory.guest import F_NEXT, F_WRITE
from tests.memory.harness import (
    AVAIL,
    DESC,
    NUM,
    USED,
    Guest,
    SnapshotHarness,
    exchange,
    region,
    start_device,
)
from tests.record.harness import open_fds
from vhtrace.cli.main import main
from vhtrace.memory.capture import Snapshotter
from vhtrace.memory.tracedata import SnapshotMemory, read_pages, read_snapshots
from vhtrace.protocol.messages import build
from vhtrace.protocol.virtio import inflight_queue_region_size as queue_region_size
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import FindingRecord, MessageRecord, SnapshotRecord

MiB = 1 << 20


@pytest.fixture
def guest():
    ram = Guest()
    yield ram
    ram.close()


def snapshots(records) -> list[SnapshotRecord]:
    return [r for r in records if isinstance(r, SnapshotRecord)]


def findings(records) -> list:
    return [r.finding for r in records if isinstance(r, FindingRecord)]


def wait_for(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def rings_json(path: Path, capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["rings", str(path), "--json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def one_request(guest: Guest) -> None:
    """A virtio-blk-like read: header (device reads), 8 KiB data + status (device writes)."""
    guest.desc(0, 0x100000, 16, F_NEXT, 1)
    guest.desc(1, 0x200000, 8192, F_NEXT | F_WRITE, 2)
    guest.desc(2, 0x100010, 1, F_WRITE, 0)
    guest.write(0x100000, struct.pack("<IIQ", 0, 0, 2048))  # VIRTIO_BLK_T_IN, sector 2048
    guest.make_available(0)


def test_default_snapshots_show_the_ring_at_start_and_stop(
    tmp_path: Path, guest: Guest, capsys
) -> None:
    harness = SnapshotHarness(tmp_path)
    fe, be = harness.connect()
    start_device(fe, be, guest)
    one_request(guest)
    guest.write(0x200000, b"DATA" * 2048)  # the device fills the buffer ...
    guest.use(1, [(0, 8193)])  # ... and completes the request
    exchange(fe, be, "GET_VRING_BASE", {"index": 0, "num": 0}, reply={"index": 0, "num": 1})
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    records = harness.records()

    assert [s.trigger for s in snapshots(records)] == ["start", "stop"]
    start, stop = snapshots(records)
    assert start.info["ring"] == 0 and start.info["request"] == "SET_VRING_ENABLE"
    assert stop.info["request"] == "GET_VRING_BASE" and stop.info["role"] == "reply"
    assert findings(records) == []

    states = rings_json(harness.trace_path, capsys)
    assert [(s["snapshot"], s["trigger"]) for s in states] == [(1, "start"), (2, "stop")]
    at_stop = states[1]
    assert (at_stop["avail_idx"], at_stop["used_idx"], at_stop["backend_base"]) == (1, 1, 1)
    assert at_stop["backend_base_from"] == "GET_VRING_BASE"
    (done,) = at_stop["recent"]
    assert (done["id"], done["len"]) == (0, 8193)
    assert [(b["addr"], b["len"], b["write"]) for b in done["buffers"]] == [
        (0x100000, 16, False),
        (0x200000, 8192, True),
        (0x100010, 1, True),
    ]

    assert (
        main(["memory", str(harness.trace_path), "--at", "2", "--gpa", "0x200000", "--len", "32"])
        == 0
    )
    dump = capsys.readouterr().out
    assert "44 41 54 41 44 41 54 41" in dump and "|DATADATADATADATA|" in dump
    assert main(["show", str(harness.trace_path)]) == 0  # v2 traces still show


def test_with_gpa_addresses_rings_at_guest_physical_addresses_are_decoded(
    tmp_path: Path, guest: Guest, capsys
) -> None:
    """GPA_ADDRESSES: SET_VRING_ADDR carries guest-physical addresses (the region's
    userspace_addr equals its guest_phys_addr): the snapshot must read the ring there,
    not look the addresses up as front-end virtual ones (where they are in no region)."""
    harness = SnapshotHarness(tmp_path)
    fe, be = harness.connect()
    start_device(fe, be, guest, gpa_addresses=True)
    one_request(guest)
    guest.use(1, [(0, 8193)])
    exchange(fe, be, "GET_VRING_BASE", {"index": 0, "num": 0}, reply={"index": 0, "num": 1})
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    records = harness.records()
    assert findings(records) == []
    start, stop = snapshots(records)
    assert start.info["address_space"] == "gpa"
    (config,) = stop.info["rings"]
    assert (config["desc_gpa"], config["avail_gpa"], config["used_gpa"]) == (DESC, AVAIL, USED)
    assert "problems" not in config and not stop.info["problems"]

    at_stop = rings_json(harness.trace_path, capsys)[1]
    assert (at_stop["avail_idx"], at_stop["used_idx"]) == (1, 1)
    (done,) = at_stop["recent"]
    assert [(b["addr"], b["len"]) for b in done["buffers"]] == [
        (0x100000, 16),
        (0x200000, 8192),
        (0x100010, 1),
    ]
    capsys.readouterr()
    assert main(["rings", str(harness.trace_path)]) == 0
    text = capsys.readouterr().out
    assert f"desc 0x{DESC:x} (gpa)" in text, text
    assert "id 0 len 8193: 0x100000+16 r, 0x200000+8192 w, 0x100010+1 w" in text


def test_in_flight_requests_are_listed_with_their_chains(
    tmp_path: Path, guest: Guest, capsys
) -> None:
    harness = SnapshotHarness(tmp_path, snapshot="stop")
    fe, be = harness.connect()
    start_device(fe, be, guest)
    one_request(guest)  # never completed: the back-end stops with it in flight
    exchange(fe, be, "GET_VRING_BASE", {"index": 0, "num": 0}, reply={"index": 0, "num": 1})
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    harness.stop()
    (state,) = rings_json(harness.trace_path, capsys)
    assert (state["avail_idx"], state["used_idx"], state["backend_base"]) == (1, 0, 1)
    (pending,) = state["in_flight"]
    assert pending["head"] == 0 and len(pending["buffers"]) == 3
    capsys.readouterr()
    assert main(["rings", str(harness.trace_path)]) == 0
    text = capsys.readouterr().out
    assert "GET_VRING_BASE 1: 0 made available not taken yet, 1 taken and not used" in text
    assert "avail[0] idx 0  head 0: 0x100000+16 r, 0x200000+8192 w, 0x100010+1 w" in text


def test_before_holds_the_message_until_the_snapshot_is_written(
    tmp_path: Path, guest: Guest
) -> None:
    harness = SnapshotHarness(tmp_path, snapshot="before:GET_VRING_BASE")
    fe, be = harness.connect()
    start_device(fe, be, guest)
    one_request(guest)
    fe.send(build("GET_VRING_BASE", {"index": 0, "num": 0}))
    be.read()
    guest.use(1, [(0, 8193)])  # the back-end acts on the message: the snapshot is older
    be.send(build("GET_VRING_BASE", {"index": 0, "num": 1}, reply=True))
    fe.read()
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    (snap,) = snapshots(harness.records())
    assert snap.trigger == "before:GET_VRING_BASE" and snap.info["exact"] is True
    assert snap.info["held"] is True
    records = harness.records()
    messages = [r for r in records if isinstance(r, MessageRecord)]
    held = next(m for m in messages if m.seq == snap.seq)
    assert held.raw[:4] == (11).to_bytes(4, "little")
    # the used ring as the snapshot saw it: idx still 0
    (read,) = read_snapshots(TraceReader(harness.trace_path)).snapshots
    store = read_pages(TraceReader(harness.trace_path), read.hashes())
    assert SnapshotMemory(read.extents, store).read(USED + 2, 2) == b"\0\0"


def test_a_slow_snapshot_does_not_hold_the_relay_beyond_the_hold_time(
    tmp_path: Path, guest: Guest, monkeypatch
) -> None:
    real_take = Snapshotter.take

    def slow_take(self, *args, **kwargs):
        time.sleep(0.6)
        return real_take(self, *args, **kwargs)

    monkeypatch.setattr(Snapshotter, "take", slow_take)
    harness = SnapshotHarness(tmp_path, snapshot="before:SET_VRING_CALL", hold_ms=50)
    fe, be = harness.connect()
    call = os.eventfd(0)
    sent = time.monotonic()
    fe.send(build("SET_VRING_CALL", {"index": 0}, fds=(call,)))
    got = be.read()
    waited = time.monotonic() - sent
    for fd in got.fds:
        os.close(fd)
    os.close(call)
    assert waited < 0.4, f"the relay held the message {waited:.3f} s"
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    records = harness.records()
    (snap,) = snapshots(records)
    assert snap.info["exact"] is False
    assert [f.code for f in findings(records)] == ["snapshot-hold"]


def test_default_triggers_never_hold_the_relay(tmp_path: Path, guest: Guest, monkeypatch) -> None:
    real_take = Snapshotter.take

    def slow_take(self, *args, **kwargs):
        time.sleep(1.0)
        return real_take(self, *args, **kwargs)

    monkeypatch.setattr(Snapshotter, "take", slow_take)
    harness = SnapshotHarness(tmp_path)
    fe, be = harness.connect()
    start_device(fe, be, guest)  # the start snapshot now takes a second on the recorder
    sent = time.monotonic()
    exchange(fe, be, "GET_FEATURES", reply={"features": 1})
    exchange(fe, be, "SET_OWNER")
    assert time.monotonic() - sent < 0.5
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    assert [s.trigger for s in snapshots(harness.records())] == ["start"]


def test_memory_fds_are_kept_while_needed_and_closed_after(tmp_path: Path, guest: Guest) -> None:
    harness = SnapshotHarness(tmp_path)
    before = open_fds()
    fe, be = harness.connect()
    start_device(fe, be, guest)
    second = Guest(MiB)
    table = build(
        "SET_MEM_TABLE",
        {
            "nregions": 2,
            "regions": [
                {k: v for k, v in region(guest.size).items() if k != "padding"},
                {
                    "guest_phys_addr": 1 << 32,
                    "memory_size": MiB,
                    "userspace_addr": 1 << 44,
                    "mmap_offset": 0,
                },
            ],
        },
        fds=(guest.fd, second.fd),
    )
    fe.send(table)
    for fd in be.read().fds:
        os.close(fd)
    exchange(
        fe,
        be,
        "REM_MEM_REG",
        {
            "padding": 0,
            "guest_phys_addr": 1 << 32,
            "memory_size": MiB,
            "userspace_addr": 1 << 44,
            "mmap_offset": 0,
        },
    )
    memory = harness.recorder.memory
    assert memory is not None
    # the recorder may not have seen the session yet: wait for it, do not index it
    wait_for(lambda: 1 in memory.sessions and len(memory.sessions[1].regions) == 1)
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    harness.stop()
    second.close()
    assert open_fds() <= before


def test_an_inflight_area_with_a_bad_batch_head_is_a_finding(
    tmp_path: Path, guest: Guest, capsys
) -> None:
    harness = SnapshotHarness(tmp_path, snapshot="stop")
    fe, be = harness.connect()
    start_device(fe, be, guest)
    area = os.memfd_create("vhost-inflight", os.MFD_CLOEXEC)
    size = queue_region_size(NUM)
    os.ftruncate(area, size)
    os.pwrite(area, struct.pack("<QHHHH", 0, 1, NUM, NUM + 5, 0), 0)  # last_batch_head 13
    os.pwrite(area, struct.pack("<B5xHQ", 1, 0, 7), 16 + 16 * 3)  # desc 3 in flight
    fields = {"mmap_size": 0, "mmap_offset": 0, "num_queues": 1, "queue_size": NUM}
    fe.send(build("GET_INFLIGHT_FD", fields))
    be.read()
    be.send(build("GET_INFLIGHT_FD", {**fields, "mmap_size": size}, reply=True, fds=(area,)))
    got = fe.read()
    for fd in got.fds:
        os.close(fd)
    os.close(area)
    exchange(fe, be, "GET_VRING_BASE", {"index": 0, "num": 0}, reply={"index": 0, "num": 0})
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    records = harness.records()
    (finding,) = [f for f in findings(records) if f.code == "inflight-batch-head"]
    assert finding.severity == "error" and "last_batch_head 13 >= desc_num 8" in finding.text
    capsys.readouterr()
    main(["rings", str(harness.trace_path)])
    text = capsys.readouterr().out
    assert "queue 0: version 1 desc_num 8 used_idx 0  last_batch_head 13  in flight: 3@7" in text
    assert "!! last_batch_head 13 >= desc_num 8" in text


def test_a_region_larger_than_its_fd_is_read_as_far_as_the_fd_goes(tmp_path: Path, capsys) -> None:
    small = Guest(MiB)
    small.write(MiB - 4, b"END!")
    harness = SnapshotHarness(tmp_path, snapshot="signal", memory="full")
    fe, be = harness.connect()
    exchange(fe, be, "ADD_MEM_REG", region(1 << 62), fds=(small.fd,))
    memory = harness.recorder.memory
    assert memory is not None
    wait_for(lambda: 1 in memory.sessions)  # the recorder has seen the region
    harness.recorder.request_snapshot("signal")
    wait_for(lambda: memory.snapshotter.count == 1)
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    records = harness.records()
    small.close()
    (mapped,) = [f for f in findings(records) if f.code == "snapshot-map"]
    assert "the fd holds 0x100000" in mapped.text
    (snap,) = snapshots(records)
    assert snap.trigger == "signal" and snap.info["stats"]["pages"] == 256
    assert main(["memory", str(harness.trace_path), "--at", "1", "--gpa", str(MiB - 16)]) == 1
    out = capsys.readouterr()
    assert "|............END!|" in out.out and "not captured (240 bytes)" in out.out


def test_periodic_snapshots(tmp_path: Path, guest: Guest) -> None:
    harness = SnapshotHarness(tmp_path, snapshot="every:0.1")
    fe, be = harness.connect()
    start_device(fe, be, guest)
    time.sleep(0.45)
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    shots = snapshots(harness.records())
    assert len(shots) >= 3 and {s.trigger for s in shots} == {"every"}
    assert all(s.seq == 0 for s in shots)


def test_memory_writes_a_region_image(tmp_path: Path, guest: Guest, capsys) -> None:
    harness = SnapshotHarness(tmp_path, snapshot="stop", memory="full")
    fe, be = harness.connect()
    start_device(fe, be, guest)
    guest.write(3 * MiB, os.urandom(3 * 4096))
    exchange(fe, be, "GET_VRING_BASE", {"index": 0, "num": 0}, reply={"index": 0, "num": 0})
    fe.close()
    be.close()
    harness.wait_sessions_ended(1)
    harness.stop()
    image = tmp_path / "guest.img"
    assert main(["memory", str(harness.trace_path), "--at", "1", "--out", str(image)]) == 0
    assert image.read_bytes() == os.pread(guest.fd, guest.size, 0)
    with pytest.raises(SystemExit) as exited:
        main(["memory", str(harness.trace_path), "--at", "7"])
    assert exited.value.code == 2
    assert "no snapshot 7 (the trace has 1 to 1)" in capsys.readouterr().err
