"""DPDK's dpdk-testpmd as the real peers: virtio-user (front-end) and the vhost PMD (back-end).

Every test checks the data path, not only the messages: two io-forwarding testpmds loop
packets between them (``start tx_first`` injects the first burst), so each side's port
counts packets received and sent only if the rings the trace shows really worked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mockbackend import MockBackend, NetLoopback, Script, expect
from tests.support import scenarios
from tests.support.tracecheck import Trace
from vhtrace.lab import VhostUserDevice, Workspace
from vhtrace.lab.dpdk import PortStats, VhostPmd, VirtioUser, parse_port_stats
from vhtrace.lab.proc import is_listening, wait_until
from vhtrace.protocol import spec

VHTRACE = [sys.executable, "-m", "vhtrace.cli.main"]
PACKETS = scenarios.DPDK_PACKETS
TESTPMD_BURST = 32
"""Packets testpmd puts on a ring at once (its default --burst)."""


def vhtrace(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VHTRACE, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def record_loop(lab: Workspace, **options: object) -> Path:
    """virtio-user -> vhtrace record -> vhost PMD, packets counted on both sides."""
    outcome = scenarios.dpdk_loop(lab, **options)
    for side in ("frontend", "backend"):
        stats = outcome.notes[side]
        assert stats.rx_packets >= PACKETS and stats.tx_packets >= PACKETS, (side, stats)
    assert set(outcome.notes["exits"].values()) == {0}, outcome.notes["exits"]
    return outcome.trace


# --------------------------------------------------------------------------- unit


def test_port_stats_are_read_from_testpmds_answer() -> None:
    answer = """
  ######################## NIC statistics for port 0  ########################
  RX-packets: 4672       RX-missed: 0          RX-bytes:  299008
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 4736       TX-errors: 0          TX-bytes:  303104
"""
    assert parse_port_stats(answer) == {0: PortStats(4672, 4736, 299008, 303104)}
    assert parse_port_stats("testpmd> ") == {}


def test_vdev_strings_carry_every_option() -> None:
    vdev = VirtioUser(Path("/tmp/x.sock"), server=True, queues=2, packed_vq=True,
                      in_order=False, mrg_rxbuf=True, queue_size=512).vdev()  # fmt: skip
    assert vdev == (
        "net_virtio_user0,path=/tmp/x.sock,queues=2,server=1,packed_vq=1,in_order=0,"
        "mrg_rxbuf=1,queue_size=512"
    )
    assert VhostPmd(Path("/tmp/y.sock"), client=True, queues=2, tso=True).vdev() == (
        "net_vhost0,iface=/tmp/y.sock,queues=2,client=1,tso=1"
    )


# --------------------------------------------------------------------------- record


@pytest.mark.lab_needs("testpmd", "hugepages")
@pytest.mark.parametrize("queues", [1, 2])
@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_virtio_user_through_record_to_vhost_pmd(lab: Workspace, packed: bool,
                                                 queues: int) -> None:  # fmt: skip
    trace_path = record_loop(lab, packed=packed, queues=queues)
    trace = Trace.read(trace_path)
    assert trace.problem is None, trace.problem
    assert trace.sessions() == [1]
    assert [str(f) for f in trace.findings("error")] == []
    # The device type without QEMU: the vhost PMD's --vdev names it, in the session header.
    [start] = trace.events("session-start")
    assert start.info["device"] == "net", start.info
    assert start.info["device_from"] == "from the back-end's --vdev net_vhost0"
    shown = vhtrace("show", trace_path)
    assert shown.returncode == 0, shown.stderr
    [offer] = [line for line in shown.stdout.splitlines() if "GET_FEATURES reply" in line]
    assert "MRG_RXBUF" in offer and "bit15" not in offer, offer
    forced = vhtrace("show", trace_path, "--device", "blk").stdout
    assert "FLUSH" in next(line for line in forced.splitlines() if "GET_FEATURES reply" in line)

    [features] = trace.named("SET_FEATURES")
    negotiated = features.analysis.fields["features"]
    assert bool(negotiated >> spec.VIRTIO_F_RING_PACKED & 1) == packed
    # The STATUS exchange QEMU 7.2 never has: FEATURES_OK, read back, then DRIVER_OK.
    statuses = [m.analysis.fields["status"] for m in trace.named("SET_STATUS")]
    assert statuses[0] & 0x8 and statuses[-1] & 0x4, statuses
    assert trace.named("GET_STATUS", role="reply")
    # The memory table: one region in a hugetlbfs file (--single-file-segments).
    [table] = trace.named("SET_MEM_TABLE")
    assert [fd["kind"] for fd in table.record.fds] == ["hugetlbfs"]
    # Every ring set up: 2 per queue pair, each with its number, base, address, kick.
    rings = set(range(2 * queues))
    for request in ("SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR", "SET_VRING_KICK"):
        seen = {m.analysis.fields["index"] for m in trace.named(request)}
        assert seen == rings, (request, seen)
    enabled = {m.analysis.fields["index"] for m in trace.named("SET_VRING_ENABLE")
               if m.analysis.fields["num"] == 1}  # fmt: skip
    assert enabled == rings

    # The rings decoded from the snapshots, in the layout negotiated, with traffic on them.
    done = vhtrace("rings", trace_path, "--json")
    assert done.returncode == 0, done.stderr
    views = [json.loads(line) for line in done.stdout.splitlines()]
    ring_views = [v for v in views if v.get("type") == "ring"]
    assert {v["ring"] for v in ring_views} == rings
    assert {v["layout"] for v in ring_views} == {"packed" if packed else "split"}
    stops = [v for v in ring_views if v["trigger"] == "stop"]
    assert stops, "a snapshot at GET_VRING_BASE"
    # A stopped ring reads whole; one copied while packets flow is read page by page, and
    # on a loaded machine its avail index may run ahead of a used index read earlier.
    assert not [p for v in stops for p in v["problems"]], stops


# --------------------------------------------------------------------------- reconnect


@pytest.mark.lab_needs("testpmd", "hugepages")
def test_reverse_topology_vhost_pmd_restarted(lab: Workspace) -> None:
    """virtio-user listens (server=1), the vhost PMD connects (client=1) through the
    recorder; the PMD is restarted and virtio-user takes it back: two sessions."""
    outcome = scenarios.dpdk_reconnect(lab)
    fe_counts, be_counts = outcome.notes["frontend"], outcome.notes["backends"]
    assert len(be_counts) == 2 and all(c.rx_packets >= PACKETS for c in be_counts), be_counts
    # virtio-user counted the packets of each PMD in turn: its counters grew in both runs.
    assert fe_counts[1].rx_packets >= fe_counts[0].rx_packets + PACKETS, fe_counts
    assert set(outcome.notes["exits"].values()) == {0}, outcome.notes["exits"]

    trace = Trace.read(outcome.trace)
    assert trace.problem is None, trace.problem
    assert len(trace.sessions()) == 2, [(e.event, e.info) for e in trace.events()]
    assert trace.header["topology"] == "backend-connects"
    for session in trace.sessions():
        kicks = [m for m in trace.named("SET_VRING_KICK") if m.record.session == session]
        assert len(kicks) == 2, f"session {session} set both rings up"
    # What vhtrace finds: on its reconnection virtio-user stops the rings of the *new*
    # back-end (SET_VRING_ENABLE 0, GET_VRING_BASE) before negotiating any feature with it.
    second = trace.sessions()[1]
    [negotiation] = [m.record.seq for m in trace.named("GET_FEATURES")
                     if m.record.session == second]  # fmt: skip
    errors = [
        (m.record.session, m.record.seq, m.analysis.name, f.text)
        for m in trace.messages
        for f in m.analysis.findings
        if f.severity == "error"
    ]
    assert errors, "virtio-user's early SET_VRING_ENABLE is flagged"
    for session, seq, name, message in errors:
        assert (session, name) == (second, "SET_VRING_ENABLE") and seq < negotiation, errors
        assert "PROTOCOL_FEATURES" in message


# --------------------------------------------------------------------------- replay


def replay_json(trace: Path, *args: str) -> tuple[int, dict]:
    done = vhtrace("replay", trace, "--json", *args)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.lab_needs("testpmd", "hugepages")
def test_replay_against_fresh_and_different_vhost_pmds(lab: Workspace) -> None:
    trace = record_loop(lab)
    same = lab.testpmd(VhostPmd(lab.sock("fresh")), name="vhost-fresh")
    code, report = replay_json(trace, "--backend", str(same.socket))
    assert code == 0, json.dumps(report["divergences"], indent=2)
    assert same.quit() == 0

    # tso=1 makes the PMD offer HOST_TSO4/6 too: GET_FEATURES' reply diverges.
    other = lab.testpmd(VhostPmd(lab.sock("tso"), tso=True), name="vhost-tso")
    code, report = replay_json(trace, "--backend", str(other.socket))
    assert code == 1, report
    first = report["divergences"][0]
    assert "GET_FEATURES reply" in first["where"], first
    [difference] = first["differences"]
    assert difference["field"] == "features", first
    extra = int(difference["live"], 16) & ~int(difference["recorded"], 16)
    assert extra == 1 << 11 | 1 << 12, first  # HOST_TSO4, HOST_TSO6
    assert "HOST_TSO4" in difference["note"], difference  # named: the device is known


@pytest.mark.lab_needs("testpmd", "hugepages")
def test_replay_serves_the_vhost_pmd_to_virtio_user(lab: Workspace) -> None:
    """The recorded vhost PMD served to a new virtio-user: the same control plane."""
    backend = lab.testpmd(VhostPmd(lab.sock("vhost")), name="vhost")
    proxy = lab.record(lab.sock("front"), backend.socket)
    first = lab.testpmd(VirtioUser(proxy.frontend), name="virtio-user-1")
    assert first.quit() == 0 and backend.quit() == 0
    assert proxy.interrupt() == 0

    served = lab.sock("served")
    server = subprocess.Popen(
        [*VHTRACE, "replay", str(proxy.trace), "--serve", str(served), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: is_listening(served) or server.poll() is not None, 30)
        assert server.poll() is None, server.communicate()
        again = lab.testpmd(VirtioUser(served), name="virtio-user-2")
        assert again.stats().rx_packets == 0
        assert again.quit() == 0
        out, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    report = json.loads(out)
    assert server.returncode == 0, json.dumps(report["divergences"], indent=2) + err


# --------------------------------------------------------------------------- mockbackend


@pytest.mark.lab_needs("testpmd", "hugepages")
def test_mockbackend_net_loops_virtio_user_packets_back(lab: Workspace) -> None:
    device = NetLoopback()
    script = Script(device)
    script.expect(expect.no_violations())
    mock = MockBackend(script).start(lab.sock("mock"))
    frontend = lab.testpmd(VirtioUser(lab.sock("mock")), name="virtio-user")
    frontend.start_forwarding(tx_first=True)
    stats = frontend.wait_packets(rx=PACKETS, tx=PACKETS, timeout=90)
    assert frontend.quit() == 0
    [report] = mock.wait(30)
    # testpmd counts a burst as sent once it is on the ring; the last one may still be there
    # when it quits (the device stops before mockbackend took it)
    assert device.sent >= stats.tx_packets - TESTPMD_BURST, (device.sent, stats)
    assert stats.tx_packets >= PACKETS, stats
    assert device.delivered >= stats.rx_packets >= PACKETS, (device.delivered, stats)
    assert report.expectation_failures == [] and report.errors == []


# --------------------------------------------------------------------------- QEMU


GUEST_PINGS = """
_dev=$(ls /sys/class/net | grep -v lo | head -n 1)
vht netdev "$_dev"
ip link set "$_dev" up
ip addr add 10.99.0.1/24 dev "$_dev"
ping -c 5 -W 1 10.99.0.2 > /dev/null 2>&1 || true
vht operstate "$(cat /sys/class/net/$_dev/operstate)"
vht tx "$(cat /sys/class/net/$_dev/statistics/tx_packets)"
vht rx "$(cat /sys/class/net/$_dev/statistics/rx_packets)"
"""


@pytest.mark.lab_needs("qemu", "busybox", "kernel", "testpmd")
def test_qemu_guest_sends_packets_the_vhost_pmd_counts(lab: Workspace) -> None:
    """QEMU's vhost-user-net with the vhost PMD (through vhtrace record) as back-end."""
    backend = lab.testpmd(VhostPmd(lab.sock("vhost")), name="vhost", hugepages=False)
    backend.start_forwarding()
    proxy = lab.record(lab.sock("front"), backend.socket)
    initrd = lab.initramfs(GUEST_PINGS, devices=("net",))
    net = VhostUserDevice("net", proxy.frontend, device_options={"romfile": ""})
    with lab.qemu(initrd, [net]) as vm:
        markers = vm.finish(timeout=180)
    tx = int(markers["tx"] or 0)
    assert markers["operstate"] == "up", markers
    assert tx > 0, "the guest sent nothing"
    stats = backend.stats()
    assert stats.rx_packets >= tx, (stats, tx)
    # io forwarding on its one port sends every packet back: the guest receives them.
    assert int(markers["rx"] or 0) > 0 and stats.tx_packets > 0, (markers, stats)
    assert backend.quit() == 0
    assert proxy.interrupt() == 0
    trace = Trace.read(proxy.trace)
    assert trace.problem is None
    assert trace.named("SET_VRING_KICK")


# --------------------------------------------------------------------------- OVS-DPDK


@pytest.mark.lab_needs("testpmd", "ovs-dpdk", "hugepages")
def test_virtio_user_through_record_to_ovs_dpdk(lab: Workspace) -> None:
    """OVS-DPDK's vhost-user port (DPDK's vhost library inside a switch), a flow sending
    every packet back where it came from: virtio-user gets its packets back."""
    switch = lab.ovs()
    proxy = lab.record(lab.sock("front"), switch.socket)
    frontend = lab.testpmd(VirtioUser(proxy.frontend), name="virtio-user")
    frontend.start_forwarding(tx_first=True)
    stats = frontend.wait_packets(rx=PACKETS, tx=PACKETS, timeout=60)
    assert stats.rx_packets <= stats.tx_packets  # nothing comes back that was not sent
    assert frontend.quit() == 0
    assert proxy.interrupt() == 0
    trace = Trace.read(proxy.trace)
    assert trace.problem is None
    [start] = trace.events("session-start")
    assert start.info["backend"]["program"] == "ovs-vswitchd-dpdk"
    assert start.info["device"] == "net"
    assert start.info["device_from"] == "from the back-end's program ovs-vswitchd-dpdk"
    assert [str(f) for f in trace.findings("error")] == []
    assert {m.analysis.fields["index"] for m in trace.named("SET_VRING_KICK")} == {0, 1}


@pytest.mark.lab_needs("testpmd", "hugepages")
def test_device_given_at_record_wins_over_the_inferred_one(lab: Workspace) -> None:
    backend = lab.testpmd(VhostPmd(lab.sock("vhost")), name="vhost")
    proxy = lab.record(lab.sock("front"), backend.socket, extra_args=("--device", "blk"))
    frontend = lab.testpmd(VirtioUser(proxy.frontend), name="virtio-user")
    assert frontend.quit() == 0 and proxy.interrupt() == 0
    trace = Trace.read(proxy.trace)
    [start] = trace.events("session-start")
    assert (start.info["device"], start.info["device_from"]) == (
        "blk", "given with --device at record")  # fmt: skip
    [offer] = trace.named("GET_FEATURES", role="reply")
    assert "FLUSH" in offer.analysis.summary()  # bit 9 named as blk's, as the user said


@pytest.mark.lab_needs("testpmd", "hugepages")
@pytest.mark.parametrize(("in_order", "mrg_rxbuf"), [(True, False), (False, True)])
def test_virtio_user_options_reach_the_negotiation(lab: Workspace, in_order: bool,
                                                   mrg_rxbuf: bool) -> None:  # fmt: skip
    """in_order and mrg_rxbuf decide what virtio-user acks; packets flow either way."""
    backend = lab.testpmd(VhostPmd(lab.sock("vhost")), name="vhost")
    proxy = lab.record(lab.sock("front"), backend.socket)
    frontend = lab.testpmd(VirtioUser(proxy.frontend, in_order=in_order, mrg_rxbuf=mrg_rxbuf),
                           name="virtio-user")  # fmt: skip
    fe, be = scenarios.loop_packets(frontend, backend)
    assert fe.rx_packets >= PACKETS and be.rx_packets >= PACKETS
    assert frontend.quit() == 0 and backend.quit() == 0 and proxy.interrupt() == 0
    [features] = Trace.read(proxy.trace).named("SET_FEATURES")
    acked = features.analysis.fields["features"]
    in_order_bit = next(b for b, n in spec.COMMON_VIRTIO_FEATURES.items() if n == "IN_ORDER")
    mrg_bit = next(b for b, n in spec.DEVICE_VIRTIO_FEATURES[spec.DeviceType.NET].items()
                   if n == "MRG_RXBUF")  # fmt: skip
    assert bool(acked >> in_order_bit & 1) == in_order, hex(acked)
    assert bool(acked >> mrg_bit & 1) == mrg_rxbuf, hex(acked)
