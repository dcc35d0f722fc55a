"""Conversation state: gates, replies owed, pairing, postcopy, regions, rings, limits."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from vhtrace.protocol import conversation as conversation_module
from vhtrace.protocol import spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, ProtocolFeature, Side

GIB = 1 << 30
UADDR = 0x7F0000000000
PF = ProtocolFeature
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
