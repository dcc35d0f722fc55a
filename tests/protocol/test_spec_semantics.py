"""Issue 16, point 4 and 5: rules that depend on the peer or on the conversation so far.

Each test writes the payload bytes out as the spec lays them (vhost-user.rst, "Front-end
message types" / "Back-end message types"), so that a drift in our layouts fails here.
Where a rule is QEMU's rather than the spec's, the QEMU source it comes from is named in
the check's docstring (vhtrace/protocol/checks.py) and in spec.py.
"""

from __future__ import annotations

import struct

import pytest

from tests.protocol.conftest import ALL_PROTOCOL_FEATURES, DRIVER_STATUS, FEATURES_OK
from vhtrace.analysis import Analyser
from vhtrace.protocol import peers, spec
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Channel, Side
from vhtrace.protocol.spec import ProtocolFeature as PF
from vhtrace.trace.records import EventRecord

QEMU = spec.FRONTEND_QEMU
NEED_REPLY = spec.VERSION | spec.FLAG_NEED_REPLY


def codes(analysis) -> list[str]:
    return [finding.code for finding in analysis.findings]


def vring_state(index: int, num: int = 0) -> bytes:
    """struct vhost_vring_state: unsigned int index, unsigned int num."""
    return struct.pack("<II", index, num)


def vring_u64(index: int, nofd: bool = False) -> bytes:
    """SET_VRING_KICK/CALL/ERR: a u64, bits 0-7 the ring index, bit 8 'no fd'."""
    return struct.pack("<Q", index | (0x100 if nofd else 0))


def mem_region(gpa: int, uaddr: int, size: int = 1 << 30) -> bytes:
    """VhostUserMemRegMsg: u64 padding, then u64 guest_phys_addr, memory_size,
    userspace_addr, mmap_offset."""
    return struct.pack("<QQQQQ", 0, gpa, size, uaddr, 0)


def iotlb(iova: int, size: int, uaddr: int, kind: int = 2, perm: int = 3) -> bytes:
    """struct vhost_iotlb_msg: u64 iova, size, uaddr, u8 perm, u8 type, 6 bytes padding.
    type 2 is VHOST_IOTLB_UPDATE, 1 VHOST_IOTLB_MISS; perm 3 read-write."""
    return struct.pack("<QQQBB6x", iova, size, uaddr, perm, kind)


def negotiated_with(make_dialogue, protocol: int, frontend: str | None = None, virtio=None):
    talk = make_dialogue(frontend=frontend)
    kwargs = {"virtio": virtio} if virtio is not None else {}
    for step in talk.negotiate(protocol=protocol, **kwargs):
        assert not step.findings, [str(f) for f in step.findings]
    return talk


# --------------------------------------------------------------------------
# Point 4a: back-end VRING_CALL / VRING_ERR with a QEMU front-end
# --------------------------------------------------------------------------


def backend_request(talk, request_id: int, payload: bytes, flags: int = spec.VERSION):
    return talk.send(Frame.build(request_id, flags, payload), Side.BACKEND, Channel.BACKEND)


@pytest.mark.parametrize(("request_id", "name"), [(4, "VRING_CALL"), (5, "VRING_ERR")])
def test_backend_vring_call_and_err_are_errors_when_the_front_end_is_qemu(
    make_dialogue, request_id: int, name: str
) -> None:
    talk = negotiated_with(make_dialogue, ALL_PROTOCOL_FEATURES, frontend=QEMU)
    analysis = backend_request(talk, request_id, vring_state(0))
    assert analysis.name == name
    assert codes(analysis) == ["frontend-unsupported"]
    finding = analysis.findings[0]
    assert finding.severity is Severity.ERROR
    assert "-EINVAL" in finding.text and "VRING_CALL (4)" in finding.text


@pytest.mark.parametrize("request_id", [4, 5])
def test_backend_vring_call_and_err_pass_when_the_front_end_is_unknown(
    negotiated, request_id: int
) -> None:
    assert codes(backend_request(negotiated, request_id, vring_state(0))) == []


def test_the_qemu_back_end_requests_it_refuses_are_the_spec_ids_of_vring_call_and_err() -> None:
    names = {spec.request_name(Channel.BACKEND, i) for i in spec.QEMU_UNHANDLED_BACKEND_REQUESTS}
    assert names == {"VRING_CALL", "VRING_ERR"}


@pytest.mark.parametrize(
    ("info", "frontend"),
    [
        ({"frontend": {"pid": 1, "program": "qemu-system-x86_64"}}, QEMU),
        ({"frontend": {"pid": 1, "program": "qemu-system-aarch64"}}, QEMU),
        ({"frontend": {"pid": 1, "program": "qemu-kvm"}}, QEMU),
        ({"frontend": {"pid": 1, "program": "dpdk-testpmd"}}, None),
        ({"frontend": {"pid": 1}}, None),
        ({"frontend": "qemu-system-x86_64"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_the_front_end_is_qemu_when_the_recorder_saw_a_qemu_program(info, frontend) -> None:
    assert peers.frontend_of(info) == frontend


def test_the_analyser_carries_the_session_start_front_end_to_the_conversation() -> None:
    """What `vhtrace show` runs: the session-start event the recorder wrote (its info as in
    the traces/ files) makes the conversation know its front-end is QEMU."""
    info = {
        "frontend": {"pid": 26809, "uid": 0, "program": "qemu-system-x86_64"},
        "backend": {"pid": 26799, "uid": 0, "program": "qemu-storage-daemon"},
        "device": "blk",
    }
    analyser = Analyser()
    list(analyser.feed(EventRecord(0, 0, 1, "session-start", info)))
    conversation = analyser.conversation(1)
    assert conversation.state.frontend == QEMU
    assert conversation.state.device is spec.DeviceType.BLK
    other = Analyser()
    list(other.feed(EventRecord(0, 0, 1, "session-start", {"frontend": {"pid": 3}})))
    assert other.conversation(1).state.frontend is None


# --------------------------------------------------------------------------
# Point 4b: REM_MEM_REG should carry no fd (QEMU 7.2 sends none; 5.1 to 6.x sent one)
# --------------------------------------------------------------------------


def add_then_remove(talk, rem_fds: int):
    region = mem_region(0, 0x7F0000000000)
    talk.send(Frame.build(37, spec.VERSION, region), fds=1)
    return talk.send(Frame.build(38, spec.VERSION, region), fds=rem_fds)


def test_rem_mem_reg_without_an_fd_passes(negotiated) -> None:
    assert codes(add_then_remove(negotiated, 0)) == []


@pytest.mark.parametrize("frontend", [None, QEMU])
def test_rem_mem_reg_with_an_fd_is_a_warning_naming_the_spec_and_qemu(
    make_dialogue, frontend
) -> None:
    """Allowed (the back-end must close it), so a warning, from any front-end: an old QEMU
    sent it, QEMU 7.2 does not (tests/protocol/test_real_rem_mem_reg.py)."""
    talk = negotiated_with(make_dialogue, ALL_PROTOCOL_FEATURES, frontend=frontend)
    analysis = add_then_remove(talk, 1)
    assert codes(analysis) == ["fd-tolerated"]
    finding = analysis.findings[0]
    assert finding.severity is Severity.WARNING
    assert "the spec" in finding.text and "QEMU 7.2 sends none" in finding.text


def test_rem_mem_reg_with_two_fds_is_an_error_whoever_sends_it(make_dialogue) -> None:
    talk = negotiated_with(make_dialogue, ALL_PROTOCOL_FEATURES, frontend=QEMU)
    analysis = add_then_remove(talk, 2)
    assert codes(analysis) == ["fd-count"]
    assert analysis.findings[0].severity is Severity.ERROR


# --------------------------------------------------------------------------
# Point 5a: a ring starts on SET_VRING_KICK, not on its first kick
# --------------------------------------------------------------------------


def set_vring(talk, request_id: int, payload: bytes, fds: int = 0):
    return talk.send(Frame.build(request_id, spec.VERSION, payload), fds=fds)


@pytest.mark.parametrize("nofd", [False, True])
def test_set_vring_kick_starts_the_ring_before_any_kick(negotiated, nofd: bool) -> None:
    """vhost-user.rst, "Starting and stopping rings": a ring starts once the back-end has
    received SET_VRING_KICK (with an fd, or with the NOFD bit: it then polls)."""
    set_vring(negotiated, 8, vring_state(0, 256))
    set_vring(negotiated, 10, vring_state(0, 0))
    assert not negotiated.state.rings[0].started
    set_vring(negotiated, 12, vring_u64(0, nofd), fds=0 if nofd else 1)
    assert negotiated.state.rings[0].started
    # started means configured: changing its size now is an error, no kick ever came
    running = set_vring(negotiated, 8, vring_state(0, 128))
    assert codes(running) == ["ring-running"]


def test_an_in_band_kick_before_set_vring_kick_does_not_start_the_ring(negotiated) -> None:
    set_vring(negotiated, 8, vring_state(0, 256))
    set_vring(negotiated, 35, vring_state(0, 0))  # VRING_KICK (INBAND_NOTIFICATIONS)
    assert not negotiated.state.rings[0].started
    assert codes(set_vring(negotiated, 8, vring_state(0, 128))) == ["ring-repeat"]


def test_get_vring_base_reply_stops_the_ring(negotiated) -> None:
    set_vring(negotiated, 12, vring_u64(1), fds=1)
    set_vring(negotiated, 11, vring_state(1, 0))
    negotiated.send(Frame.build(11, spec.REPLY_FLAGS, vring_state(1, 7)), Side.BACKEND)
    ring = negotiated.state.rings[1]
    assert (ring.started, ring.last_base) == (False, 7)


# --------------------------------------------------------------------------
# Point 5b: with STATUS, FEATURES_OK after SET_FEATURES
# --------------------------------------------------------------------------

STATUS_ONLY = 1 << PF.STATUS | 1 << PF.REPLY_ACK


def u64(request_id: int, value: int, flags: int = spec.VERSION) -> Frame:
    return Frame.build(request_id, flags, struct.pack("<Q", value))


def status_session(make_dialogue, after_features: list[tuple[str, int]]):
    """The negotiation, SET_FEATURES, then the status exchange given, then a kick."""
    talk = make_dialogue()
    talk.request("GET_FEATURES")
    talk.reply("GET_FEATURES", {"features": 1 << 30 | 1 << 32})
    talk.request("GET_PROTOCOL_FEATURES")
    talk.reply("GET_PROTOCOL_FEATURES", {"features": STATUS_ONLY})
    talk.request("SET_PROTOCOL_FEATURES", {"features": STATUS_ONLY})
    talk.send(u64(2, 1 << 30 | 1 << 32))  # SET_FEATURES
    for step, value in after_features:
        if step == "GET_STATUS":
            talk.send(Frame.build(40, spec.VERSION))
            talk.send(u64(40, value, spec.REPLY_FLAGS), Side.BACKEND)
        else:
            talk.send(u64(39, value))  # SET_STATUS
    return talk


def kick(talk, index: int = 0):
    return talk.send(Frame.build(12, spec.VERSION, vring_u64(index)), fds=1)


def test_qemu_order_get_status_then_set_status_features_ok_passes(make_dialogue) -> None:
    """QEMU: SET_FEATURES, GET_STATUS, SET_STATUS(status | FEATURES_OK)."""
    talk = status_session(make_dialogue, [("GET_STATUS", DRIVER_STATUS), ("SET_STATUS", 0xB)])
    assert codes(kick(talk)) == []


def test_qemu_skips_set_status_when_get_status_shows_features_ok(make_dialogue) -> None:
    talk = status_session(make_dialogue, [("GET_STATUS", DRIVER_STATUS | FEATURES_OK)])
    assert codes(kick(talk)) == []


def test_dpdk_order_set_status_then_get_status_passes(make_dialogue) -> None:
    """DPDK virtio-user: SET_FEATURES, SET_STATUS(0xb), GET_STATUS; then at DRIVER_OK a
    second SET_FEATURES and the kicks, the status (0xf) set only after them."""
    talk = status_session(make_dialogue, [("SET_STATUS", 0xB), ("GET_STATUS", 0xB)])
    talk.send(u64(2, 1 << 30 | 1 << 32))  # SET_FEATURES again at DRIVER_OK
    assert codes(kick(talk, 0)) == []
    assert codes(kick(talk, 1)) == []
    assert codes(talk.send(u64(39, 0xF))) == []


def test_a_ring_started_without_features_ok_is_flagged_once(make_dialogue) -> None:
    talk = status_session(make_dialogue, [("GET_STATUS", DRIVER_STATUS)])
    first = kick(talk, 0)
    assert codes(first) == ["features-ok"]
    assert first.findings[0].severity is Severity.WARNING
    assert "status 0x3" in first.findings[0].text
    assert codes(kick(talk, 1)) == []


def test_no_status_at_all_after_set_features_is_flagged(make_dialogue) -> None:
    analysis = kick(status_session(make_dialogue, []))
    assert codes(analysis) == ["features-ok"]
    assert "no status set" in analysis.findings[0].text


def test_a_reset_status_needs_features_ok_again(make_dialogue) -> None:
    """QEMU stops the device with SET_STATUS(0); the next start sets FEATURES_OK anew."""
    talk = status_session(make_dialogue, [("GET_STATUS", 0x3), ("SET_STATUS", 0xB)])
    assert codes(kick(talk)) == []
    talk.send(u64(39, 0))
    talk.send(u64(2, 1 << 30 | 1 << 32))
    assert codes(kick(talk)) == ["features-ok"]


def test_without_status_negotiated_nothing_is_asked(negotiated, make_dialogue) -> None:
    talk = make_dialogue()
    talk.negotiate(protocol=1 << PF.REPLY_ACK)
    assert codes(kick(talk)) == []


# --------------------------------------------------------------------------
# Point 5c: GPA_ADDRESSES: regions, ring addresses and IOTLB uaddr are guest-physical
# --------------------------------------------------------------------------

GPA = 1 << PF.GPA_ADDRESSES | 1 << PF.SHMEM | 1 << PF.CONFIGURE_MEM_SLOTS | 1 << PF.REPLY_ACK
"""With SHMEM (bit 22) too, as a QEMU >= 11.1 back-end offers: bit 21 alone reads as the
rust-vmm dialect (a warning of its own, tests/protocol/test_spec_corrections.py)."""


PLAIN_VIRTIO = 1 << spec.VIRTIO_F_PROTOCOL_FEATURES | 1 << spec.VIRTIO_F_VERSION_1
"""No ACCESS_PLATFORM: ring addresses are then guest-physical, not IOVAs."""


def gpa_session(make_dialogue):
    return negotiated_with(make_dialogue, GPA, virtio=PLAIN_VIRTIO)


def test_with_gpa_addresses_a_region_whose_uaddr_is_its_gpa_passes(make_dialogue) -> None:
    talk = gpa_session(make_dialogue)
    added = talk.send(Frame.build(37, spec.VERSION, mem_region(0x100000000, 0x100000000)), fds=1)
    assert codes(added) == []


def test_with_gpa_addresses_a_region_with_another_uaddr_is_an_error(make_dialogue) -> None:
    talk = gpa_session(make_dialogue)
    added = talk.send(Frame.build(37, spec.VERSION, mem_region(0, 0x7F0000000000)), fds=1)
    assert codes(added) == ["region-gpa"]
    assert "userspace_addr 0x7f0000000000 != guest_phys_addr 0x0" in added.findings[0].text


def vring_addr(index: int, desc: int, used: int, avail: int) -> bytes:
    """struct vhost_vring_addr: u32 index, u32 flags, u64 desc, used, avail, log."""
    return struct.pack("<IIQQQQ", index, 0, desc, used, avail, 0)


def test_with_gpa_addresses_ring_addresses_are_read_as_guest_physical(make_dialogue) -> None:
    talk = gpa_session(make_dialogue)
    talk.send(Frame.build(37, spec.VERSION, mem_region(0, 0, 16 << 20)), fds=1)
    set_vring(talk, 8, vring_state(0, 8))
    inside = set_vring(talk, 9, vring_addr(0, 0x10000, 0x11000, 0x10800))
    assert codes(inside) == []
    # a front-end virtual address is in no region once addresses are guest-physical
    outside = set_vring(talk, 9, vring_addr(0, 0x7F0000010000, 0x11000, 0x10800))
    assert codes(outside) == ["ring-address"]
    assert "(gpa)" in outside.findings[0].text


IOMMU = 1 << spec.VIRTIO_F_PROTOCOL_FEATURES | 1 << spec.VIRTIO_F_ACCESS_PLATFORM
IOMMU_PROTOCOL = GPA | 1 << PF.BACKEND_REQ


def iommu_session(make_dialogue, protocol: int):
    talk = negotiated_with(make_dialogue, protocol, virtio=IOMMU)
    uaddr = 0 if protocol >> PF.GPA_ADDRESSES & 1 else 0x7F0000000000
    talk.send(Frame.build(37, spec.VERSION, mem_region(0, uaddr, 16 << 20)), fds=1)
    return talk


def iotlb_update(talk, uaddr: int):
    analysis = talk.send(Frame.build(22, NEED_REPLY, iotlb(0xFEE00000, 0x1000, uaddr)))
    talk.send(u64(22, 0, spec.REPLY_FLAGS), Side.BACKEND)
    return analysis


def test_with_gpa_addresses_the_iotlb_uaddr_is_a_guest_physical_address(make_dialogue) -> None:
    talk = iommu_session(make_dialogue, IOMMU_PROTOCOL)
    assert codes(iotlb_update(talk, 0x2000)) == []
    wrong = iotlb_update(talk, 0x7F0000002000)
    assert codes(wrong) == ["iotlb-uaddr"]
    assert "guest-physical address (GPA_ADDRESSES)" in wrong.findings[0].text


def test_without_gpa_addresses_the_iotlb_uaddr_is_a_user_address(make_dialogue) -> None:
    talk = iommu_session(make_dialogue, IOMMU_PROTOCOL & ~(1 << PF.GPA_ADDRESSES))
    assert codes(iotlb_update(talk, 0x7F0000002000)) == []
    assert codes(iotlb_update(talk, 0x2000)) == ["iotlb-uaddr"]


def test_the_back_end_iotlb_miss_keeps_its_uaddr_meaning(make_dialogue) -> None:
    """BACKEND_IOTLB_MSG is the exception the spec names: not checked as a GPA."""
    talk = iommu_session(make_dialogue, IOMMU_PROTOCOL | 1 << PF.BACKEND_SEND_FD)
    miss = talk.send(
        Frame.build(1, spec.VERSION, iotlb(0xFEE00000, 0, 0x7F0000002000, kind=1, perm=1)),
        Side.BACKEND,
        Channel.BACKEND,
    )
    assert codes(miss) == []
