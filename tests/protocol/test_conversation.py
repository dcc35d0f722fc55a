"""Conversation state: gates, replies owed, pairing, postcopy, regions, rings, limits."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest

from tests.protocol.conftest import ALL_PROTOCOL_FEATURES, DRIVER_STATUS, FEATURES_OK
from vhtrace.analysis import AnalysedMessage, Analyser, analyser_for
from vhtrace.protocol import conversation as conversation_module
from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, Side
from vhtrace.protocol.spec import ProtocolFeature as PF
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import EventRecord, MessageRecord, Record

GIB = 1 << 30
UADDR = 0x7F0000000000
BASIC_VIRTIO = 1 << spec.VIRTIO_F_PROTOCOL_FEATURES | 1 << spec.VIRTIO_F_VERSION_1


def codes(analysis) -> list[str]:
    return [finding.code for finding in analysis.findings]


def region(gpa: int, size: int = GIB, uaddr: int | None = None) -> dict[str, int]:
    return {
        "guest_phys_addr": gpa,
        "memory_size": size,
        "userspace_addr": UADDR + gpa if uaddr is None else uaddr,
        "mmap_offset": 0,
    }


# --------------------------------------------------------------------------
# Feature gates
# --------------------------------------------------------------------------


def test_get_queue_num_without_mq_says_so_with_its_message_number(dialogue) -> None:
    dialogue.negotiate(protocol=1 << PF.REPLY_ACK, virtio=BASIC_VIRTIO)  # messages 1-6
    analysis = dialogue.request("GET_QUEUE_NUM")
    assert analysis.seq == 7
    assert [str(f) for f in analysis.findings] == ["#7 GET_QUEUE_NUM: MQ not negotiated"]
    assert analysis.findings[0].code == "not-negotiated"


def test_a_gated_request_before_any_set_protocol_features(dialogue) -> None:
    analysis = dialogue.request("GET_QUEUE_NUM")
    assert codes(analysis) == ["not-negotiated"]
    assert "no SET_PROTOCOL_FEATURES yet" in analysis.findings[0].text


def test_get_protocol_features_needs_the_back_end_to_offer_bit_30(dialogue) -> None:
    dialogue.request("GET_FEATURES")
    dialogue.reply("GET_FEATURES", {"features": 1 << spec.VIRTIO_F_VERSION_1})
    analysis = dialogue.request("GET_PROTOCOL_FEATURES")
    assert codes(analysis) == ["not-negotiated"]
    assert "did not offer PROTOCOL_FEATURES" in analysis.findings[0].text


def test_iotlb_needs_access_platform_set_by_the_front_end(dialogue) -> None:
    dialogue.negotiate(protocol=1 << PF.REPLY_ACK, virtio=BASIC_VIRTIO)
    iotlb = {"iova": 0, "size": 0x1000, "uaddr": 0, "perm": 3, "type": 2}
    analysis = dialogue.request("IOTLB_MSG", iotlb)
    assert codes(analysis) == ["not-negotiated"]
    assert "ACCESS_PLATFORM not negotiated" in analysis.findings[0].text


def test_fds_on_the_back_end_channel_need_backend_send_fd(dialogue) -> None:
    dialogue.negotiate(protocol=1 << PF.BACKEND_REQ | 1 << PF.HOST_NOTIFIER)
    notifier = {"index": 0, "size": 0x1000, "offset": 0}
    analysis = dialogue.request("VRING_HOST_NOTIFIER_MSG", notifier, fds=1, channel=Channel.BACKEND)
    assert codes(analysis) == ["not-negotiated"]
    assert "BACKEND_SEND_FD" in analysis.findings[0].text


def test_set_features_with_a_bit_the_back_end_did_not_offer(dialogue) -> None:
    dialogue.request("GET_FEATURES")
    dialogue.reply("GET_FEATURES", {"features": BASIC_VIRTIO})
    analysis = dialogue.request("SET_FEATURES", {"features": BASIC_VIRTIO | 1 << 29})
    assert codes(analysis) == ["features"]
    assert "RING_EVENT_IDX" in analysis.findings[0].text


def test_inband_notifications_without_backend_req_and_reply_ack(dialogue) -> None:
    offer = 1 << PF.INBAND_NOTIFICATIONS | 1 << PF.REPLY_ACK
    dialogue.request("GET_FEATURES")
    dialogue.reply("GET_FEATURES", {"features": BASIC_VIRTIO})
    dialogue.request("GET_PROTOCOL_FEATURES")
    dialogue.reply("GET_PROTOCOL_FEATURES", {"features": offer})
    analysis = dialogue.request("SET_PROTOCOL_FEATURES", {"features": offer})
    assert codes(analysis) == ["features"]
    assert "should close the connection" in analysis.findings[0].text


# --------------------------------------------------------------------------
# Replies owed
# --------------------------------------------------------------------------


def test_need_reply_under_reply_ack_is_owed_and_answered(negotiated) -> None:
    request = negotiated.request("SET_VRING_ENABLE", {"index": 0, "num": 1}, need_reply=True)
    reply = negotiated.reply("SET_VRING_ENABLE", {"value": 0}, layout="ack")
    assert (reply.role, reply.layout, reply.answers) == (Role.REPLY, "ack", request.seq)
    assert reply.summary() == "ok"
    assert negotiated.conversation.close() == []


def test_need_reply_missing_at_close(negotiated) -> None:
    negotiated.request("SET_VRING_NUM", {"index": 0, "num": 256})
    negotiated.request("SET_VRING_ENABLE", {"index": 0, "num": 1}, need_reply=True)
    late = negotiated.conversation.close()
    assert [str(f) for f in late] == [
        f"#{negotiated.seq} SET_VRING_ENABLE: NEED_REPLY set, no reply before the connection closed"
    ]
    assert late[0].code == "no-reply"


def test_an_intrinsic_reply_missing_at_close_names_the_reason_given(negotiated) -> None:
    negotiated.request("GET_VRING_BASE", {"index": 0, "num": 0})
    late = negotiated.conversation.close("the trace ended")
    assert [f.text for f in late] == ["no reply before the trace ended"]


def test_need_reply_without_reply_ack_is_a_warning_and_owes_nothing(dialogue) -> None:
    dialogue.negotiate(protocol=1 << PF.MQ, virtio=BASIC_VIRTIO)
    analysis = dialogue.request("SET_VRING_NUM", {"index": 0, "num": 256}, need_reply=True)
    assert codes(analysis) == ["need-reply"]
    assert analysis.findings[0].severity is Severity.WARNING
    assert dialogue.conversation.close() == []


def test_a_failed_ack_is_a_warning(negotiated) -> None:
    negotiated.request("SET_VRING_NUM", {"index": 0, "num": 256}, need_reply=True)
    reply = negotiated.reply("SET_VRING_NUM", {"value": 1}, layout="ack")
    assert codes(reply) == ["reply-failure"]
    assert reply.summary() == "failed (1)"


def test_set_log_base_owes_a_reply_only_with_log_shmfd(make_dialogue) -> None:
    log = {"mmap_size": 0x1000, "mmap_offset": 0}
    with_shmfd = make_dialogue()
    with_shmfd.negotiate(protocol=1 << PF.LOG_SHMFD)
    with_shmfd.request("SET_LOG_BASE", log, fds=1)
    assert [f.code for f in with_shmfd.conversation.close()] == ["no-reply"]
    without = make_dialogue()
    without.negotiate(protocol=1 << PF.REPLY_ACK)
    assert codes(without.request("SET_LOG_BASE", log, fds=0)) == []
    assert without.conversation.close() == []


# --------------------------------------------------------------------------
# Pairing replies with requests
# --------------------------------------------------------------------------


def test_a_reply_to_another_request_than_the_one_waiting(negotiated) -> None:
    waiting = negotiated.request("GET_VRING_BASE", {"index": 0, "num": 0})
    reply = negotiated.reply("GET_PROTOCOL_FEATURES", {"features": 0})
    assert codes(reply) == ["wrong-reply"]
    assert f"#{waiting.seq} GET_VRING_BASE is waiting for its reply" in reply.findings[0].text
    assert reply.answers is None
    assert [f.seq for f in negotiated.conversation.close()] == [waiting.seq]


def test_a_reply_out_of_order_is_matched_to_the_request_it_names(negotiated) -> None:
    first = negotiated.request("GET_VRING_BASE", {"index": 0, "num": 0})
    second = negotiated.request("SET_VRING_ENABLE", {"index": 0, "num": 0}, need_reply=True)
    reply = negotiated.reply("SET_VRING_ENABLE", {"value": 0}, layout="ack")
    assert reply.answers == second.seq
    assert codes(reply) == ["wrong-reply"]
    assert f"while #{first.seq} GET_VRING_BASE still waits" in reply.findings[0].text
    late = negotiated.reply("GET_VRING_BASE", {"index": 0, "num": 7})
    assert (late.answers, late.findings) == (first.seq, [])


def test_a_reply_nobody_asked_for(negotiated) -> None:
    reply = negotiated.reply("GET_FEATURES", {"features": 0})
    assert codes(reply) == ["unexpected-reply"]
    assert reply.role is Role.REPLY
    assert reply.layout == "virtio_features"  # still read by the request's reply layout


@pytest.mark.parametrize("flags", [0x1, 0xD, 0x15], ids=["no REPLY", "NEED_REPLY", "reserved"])
def test_reply_flags_other_than_0x5(negotiated, flags) -> None:
    negotiated.request("GET_FEATURES")
    frame = build("GET_FEATURES", {"features": BASIC_VIRTIO}, reply=True)
    reply = negotiated.send(Frame.build(frame.request, flags, frame.payload), Side.BACKEND)
    assert reply.answers is not None
    assert codes(reply)[0] in ("flags-reply", "flags-reserved")


def test_get_config_reply_of_another_size_than_asked(negotiated) -> None:
    negotiated.request("GET_CONFIG", {"offset": 0, "size": 60, "flags": 0, "region": bytes(60)})
    reply = negotiated.reply("GET_CONFIG", {"offset": 0, "size": 8, "region": bytes(8)})
    assert codes(reply) == ["config-size"]


def test_get_vring_base_reply_for_another_ring(negotiated) -> None:
    negotiated.request("GET_VRING_BASE", {"index": 0, "num": 0})
    reply = negotiated.reply("GET_VRING_BASE", {"index": 1, "num": 0})
    assert codes(reply) == ["reply-mismatch"]


def test_a_u64_reply_with_the_wrong_size(negotiated) -> None:
    negotiated.request("GET_QUEUE_NUM")
    reply = negotiated.send(Frame.build(17, spec.REPLY_FLAGS, bytes(4)), Side.BACKEND)
    assert codes(reply) == ["size"]


def test_the_back_end_channel_has_its_own_queue(negotiated) -> None:
    main = negotiated.request("GET_VRING_BASE", {"index": 0, "num": 0})
    backend = negotiated.request(
        "VRING_CALL", {"index": 0, "num": 0}, need_reply=True, channel=Channel.BACKEND
    )
    reply = negotiated.reply("VRING_CALL", {"value": 0}, layout="ack", channel=Channel.BACKEND)
    assert (reply.answers, reply.findings) == (backend.seq, [])
    assert reply.sender is Side.FRONTEND
    assert [f.seq for f in negotiated.conversation.close()] == [main.seq]


# --------------------------------------------------------------------------
# Postcopy phases
# --------------------------------------------------------------------------


def test_postcopy_phases_follow_advise_listen_end(negotiated) -> None:
    state = negotiated.state
    table = {"nregions": 1, "regions": [region(0)]}
    assert state.postcopy == "none"
    negotiated.request("SET_MEM_TABLE", table, fds=1)
    assert negotiated.conversation.close() == []  # no postcopy reply before LISTEN
    negotiated.request("POSTCOPY_ADVISE")
    assert state.postcopy == "none"  # the back-end has not answered yet
    negotiated.reply("POSTCOPY_ADVISE", layout="empty", fds=1)
    assert state.postcopy == "advised"
    negotiated.request("POSTCOPY_LISTEN", need_reply=True)
    assert state.postcopy == "listening"
    negotiated.reply("POSTCOPY_LISTEN", {"value": 0}, layout="ack")
    negotiated.request("POSTCOPY_END", need_reply=True)
    assert state.postcopy == "ended"
    negotiated.reply("POSTCOPY_END", {"value": 0}, layout="ack")
    # after the end, a memory table is a plain request again
    assert codes(negotiated.request("SET_MEM_TABLE", table, fds=1)) == []
    assert negotiated.conversation.close() == []


def test_a_postcopy_ack_that_is_not_zero(make_dialogue) -> None:
    talk = make_dialogue()
    talk.negotiate(protocol=1 << PF.REPLY_ACK | 1 << PF.PAGEFAULT)
    talk.request("POSTCOPY_ADVISE")
    talk.reply("POSTCOPY_ADVISE", layout="empty", fds=1)
    talk.request("POSTCOPY_LISTEN", need_reply=True)
    talk.reply("POSTCOPY_LISTEN", {"value": 0}, layout="ack")
    table = {"nregions": 1, "regions": [region(0)]}
    talk.request("SET_MEM_TABLE", table, fds=1)
    talk.reply("SET_MEM_TABLE", table, layout="mem_table")
    ack = talk.send(build("SET_MEM_TABLE", {"value": 3}, layout="ack"))
    assert ack.role is Role.POSTCOPY_ACK
    assert codes(ack) == ["postcopy-ack"]


# --------------------------------------------------------------------------
# Regions and rings
# --------------------------------------------------------------------------


def test_regions_are_replaced_added_and_removed(negotiated) -> None:
    state = negotiated.state
    table = negotiated.request("SET_MEM_TABLE", {"nregions": 1, "regions": [region(0)]}, fds=1)
    assert [r.guest_phys_addr for r in state.regions] == [0]
    added = negotiated.request("ADD_MEM_REG", region(4 * GIB), fds=1)
    assert [(r.guest_phys_addr, r.seq) for r in state.regions] == [
        (0, table.seq),
        (4 * GIB, added.seq),
    ]
    negotiated.request("REM_MEM_REG", region(0))
    assert [r.guest_phys_addr for r in state.regions] == [4 * GIB]
    table = {"nregions": 1, "regions": [region(8 * GIB)]}
    negotiated.request("SET_MEM_TABLE", table, fds=1)
    assert [r.guest_phys_addr for r in state.regions] == [8 * GIB]


def test_overlapping_regions_and_unknown_removal(negotiated) -> None:
    negotiated.request("ADD_MEM_REG", region(0), fds=1)
    overlap = negotiated.request("ADD_MEM_REG", region(GIB // 2, uaddr=UADDR + 2 * GIB), fds=1)
    assert codes(overlap) == ["region-overlap"]
    assert "guest-physical" in overlap.findings[0].text
    removal = negotiated.request("REM_MEM_REG", region(16 * GIB))
    assert codes(removal) == ["region-unknown"]


def test_more_regions_than_get_max_mem_slots(negotiated) -> None:
    negotiated.request("GET_MAX_MEM_SLOTS")
    negotiated.reply("GET_MAX_MEM_SLOTS", {"value": 2})
    assert codes(negotiated.request("ADD_MEM_REG", region(0), fds=1)) == []
    assert codes(negotiated.request("ADD_MEM_REG", region(2 * GIB), fds=1)) == []
    third = negotiated.request("ADD_MEM_REG", region(4 * GIB), fds=1)
    assert codes(third) == ["region-count"]


def test_ring_lifecycle(negotiated) -> None:
    state = negotiated.state
    negotiated.request("SET_VRING_NUM", {"index": 1, "num": 128})
    negotiated.request("SET_VRING_BASE", {"index": 1, "num": 5})
    negotiated.request("SET_VRING_KICK", {"index": 1}, fds=1)
    ring = state.rings[1]
    assert (ring.num, ring.base, ring.kick, ring.started) == (128, 5, "fd", True)
    addr = {
        "index": 1,
        "flags": 0,
        "desc_user_addr": 0,
        "used_user_addr": 0,
        "avail_user_addr": 0,
        "log_guest_addr": 0,
    }
    assert codes(negotiated.request("SET_VRING_ADDR", addr)) == ["ring-running"]
    assert codes(negotiated.request("SET_VRING_BASE", {"index": 1, "num": 0})) == ["ring-running"]
    negotiated.request("GET_VRING_BASE", {"index": 1, "num": 0})
    negotiated.reply("GET_VRING_BASE", {"index": 1, "num": 99})
    assert (ring.started, ring.last_base) == (False, 99)
    assert codes(negotiated.request("SET_VRING_NUM", {"index": 1, "num": 128})) == []


def test_reset_device_stops_every_ring(negotiated) -> None:
    for index in (0, 1):
        negotiated.request("SET_VRING_KICK", {"index": index}, fds=1)
    negotiated.request("RESET_DEVICE")
    assert not any(ring.started for ring in negotiated.state.rings.values())


# --------------------------------------------------------------------------
# Bounded memory: a hostile or broken peer cannot make the state grow forever
# --------------------------------------------------------------------------


def test_many_add_mem_reg_keep_at_most_the_slot_limit(negotiated) -> None:
    for i in range(spec.MAX_RAM_SLOTS + 300):
        negotiated.request("ADD_MEM_REG", region(i * 0x100000, size=0x100000), fds=1)
    assert len(negotiated.state.regions) == spec.MAX_RAM_SLOTS


def test_ring_indices_beyond_any_ring_are_not_kept(negotiated) -> None:
    for index in range(spec.MAX_VRINGS, spec.MAX_VRINGS + 5000, 7):
        negotiated.request("SET_VRING_NUM", {"index": index, "num": 256})
        negotiated.request("SET_VRING_KICK", {"index": 0}, fds=1)
    for index in range(0x10000, 0x10000 + 3000):
        negotiated.request("SET_VRING_BASE", {"index": index, "num": 0})
    assert set(negotiated.state.rings) <= {0}


def test_thousands_of_unanswered_requests_are_tracked_up_to_a_limit(negotiated) -> None:
    limit = conversation_module.MAX_PENDING
    warnings = 0
    for _ in range(limit + 2000):
        analysis = negotiated.request("GET_FEATURES")
        warnings += codes(analysis) == ["pending-limit"]
    assert warnings == 2000
    assert len(negotiated.conversation.pending[Channel.MAIN]) == limit
    late = negotiated.conversation.close()
    assert len(late) == limit
    assert not negotiated.conversation.pending[Channel.MAIN]


def test_memory_stays_flat_over_many_distinct_messages(negotiated) -> None:
    """Distinct payloads must not accumulate (the decode cache is bounded): three
    times as many messages leave about as much allocated. Kept for good, each
    message would cost hundreds of bytes: tens of MiB here."""

    def feed(start: int, count: int) -> None:
        for i in range(start, start + count):
            payload = struct.pack("<II", i >> 16 & 3, i & 0xFFFF)  # distinct ring bases
            negotiated.send(Frame.build(10, spec.VERSION, payload))

    feed(0, 10000)  # warm up: caches fill to their bounds
    tracemalloc.start()
    try:
        feed(10000, 10000)
        after_short = tracemalloc.get_traced_memory()[0]
        feed(20000, 30000)
        after_long = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after_long - after_short < 6 << 20


# ----------------------------------------------------------------------------
# Issue 16, point 4 and 5: rules that depend on the peer or on the conversation so far.
# ----------------------------------------------------------------------------


QEMU = spec.FRONTEND_QEMU

NEED_REPLY = spec.VERSION | spec.FLAG_NEED_REPLY


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
    sent it, QEMU 7.2 does not (tests/protocol/test_conversation.py)."""
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


GPA = 1 << PF.GPA_ADDRESSES | 1 << PF.SHMEM | 1 << PF.CONFIGURE_MEM_SLOTS | 1 << PF.REPLY_ACK
"""With SHMEM (bit 22) too, as a QEMU >= 11.1 back-end offers: bit 21 alone reads as the
rust-vmm dialect (a warning of its own, tests/protocol/test_checks.py)."""

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


# ----------------------------------------------------------------------------
# REM_MEM_REG as real QEMU 7.2 sends it (tests/fixtures/qemu-rem-mem-reg/README.md): no fd,
# ----------------------------------------------------------------------------


TRACE = Path(__file__).resolve().parents[1] / "fixtures" / "qemu-rem-mem-reg"

TRACE = TRACE / "qemu-qsd-ivshmem-toggle.vht"

BAR = 0xFE000000
"""Where the guest's firmware put the ivshmem BAR (2 MiB)."""


def analysed() -> list[AnalysedMessage]:
    with TraceReader(TRACE) as reader:
        items = list(analyser_for(reader.header).run(reader))
    return [i for i in items if isinstance(i, AnalysedMessage)]


def test_qemu_7_2_sends_rem_mem_reg_without_an_fd_and_nothing_is_flagged() -> None:
    messages = analysed()
    removals = [
        m for m in messages if m.analysis.name == "REM_MEM_REG" and m.analysis.role is Role.REQUEST
    ]
    assert len(removals) >= 2
    assert all(m.record.fds == () for m in removals)
    assert {m.analysis.fields["guest_phys_addr"] for m in removals} == {BAR}
    adds = [
        m for m in messages if m.analysis.name == "ADD_MEM_REG" and m.analysis.role is Role.REQUEST
    ]
    assert all(len(m.record.fds) == 1 for m in adds)
    findings = [str(f) for m in messages for f in m.analysis.findings]
    assert findings == []


def test_the_memory_table_follows_removals_and_additions() -> None:
    """Feed the trace message by message: after each REM_MEM_REG the BAR's region is gone,
    after each ADD_MEM_REG of it, back."""
    with TraceReader(TRACE) as reader:
        header = reader.header
        records = list(reader)
    analyser = analyser_for(header)
    seen = []
    for record in records:
        for item in analyser.feed(record):
            if (
                isinstance(item, AnalysedMessage)
                and item.analysis.role is Role.REQUEST
                and item.analysis.name in ("ADD_MEM_REG", "REM_MEM_REG")
                and item.analysis.fields["guest_phys_addr"] == BAR
            ):
                state = analyser.conversations[item.record.session].state
                gpas = {r.guest_phys_addr for r in state.regions}
                seen.append((item.analysis.name, BAR in gpas))
    assert ("REM_MEM_REG", False) in seen
    assert all(present == (name == "ADD_MEM_REG") for name, present in seen)


# ----------------------------------------------------------------------------
# The STATUS rule against real front-ends (tests/fixtures/status/README.md says how the
# ----------------------------------------------------------------------------


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "status"

QEMU_TRACE = FIXTURES / "qemu-dpdk-vhost-net.vht"

DPDK = FIXTURES / "dpdk-virtio-user-dpdk-vhost.vht"


def records(trace: Path) -> tuple[dict, list[Record]]:
    with TraceReader(trace) as reader:
        return reader.header, list(reader)


def analyse(header: dict, items: list[Record]) -> list[AnalysedMessage]:
    return [i for i in analyser_for(header).run(items) if isinstance(i, AnalysedMessage)]


def sequence_to_first_kick(messages: list[AnalysedMessage]) -> list[str]:
    """The status exchange from the first SET_FEATURES to the first SET_VRING_KICK."""
    names: list[str] = []
    for message in messages:
        a = message.analysis
        if a.name == "SET_VRING_KICK":
            break
        wanted = a.name in ("SET_FEATURES", "GET_STATUS", "SET_STATUS") and a.role is Role.REQUEST
        if wanted and (names or a.name == "SET_FEATURES"):
            status = a.fields.get("status") if a.name == "SET_STATUS" else None
            names.append(a.name if status is None else f"{a.name}({status:#x})")
    return names


@pytest.mark.parametrize(
    ("trace", "order"),
    [
        (QEMU_TRACE, ["SET_FEATURES", "GET_STATUS", "SET_STATUS(0x8)"]),
        (DPDK, ["SET_FEATURES", "SET_STATUS(0xb)", "GET_STATUS", "GET_STATUS"]),
    ],
)
def test_real_front_ends_set_features_ok_before_the_rings_start_unflagged(trace, order) -> None:
    header, items = records(trace)
    messages = analyse(header, items)
    assert sequence_to_first_kick(messages) == order
    findings = [f for m in messages for f in m.analysis.findings]
    assert findings == [], [str(f) for f in findings]


@pytest.mark.parametrize("trace", [QEMU_TRACE, DPDK])
def test_without_its_status_exchange_the_same_conversation_is_flagged(trace) -> None:
    """Drop GET_STATUS and SET_STATUS (requests and replies) before the first kick: the
    first ring that starts is then reported, once, and nothing else changes."""
    header, items = records(trace)
    messages = analyse(header, items)
    first_kick = next(m.record.seq for m in messages if m.analysis.name == "SET_VRING_KICK")
    dropped = {
        m.record.seq
        for m in messages
        if m.record.seq < first_kick and m.analysis.name in ("GET_STATUS", "SET_STATUS")
    }
    assert len(dropped) >= 3
    kept = [r for r in items if not (isinstance(r, MessageRecord) and r.seq in dropped)]
    findings = [f for m in analyse(header, kept) for f in m.analysis.findings]
    assert [(f.seq, f.code) for f in findings] == [(first_kick, "features-ok")]
