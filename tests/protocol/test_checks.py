"""The 20 rows of bad-inputs.md, one test each: the malformed input yields its finding.

Rows 13 and 14 are valid inputs that real implementations wrongly rejected:
they must yield no finding. Rows 12 and 20 are about framing (short reads,
oversized headers, coalesced requests with fds), so they drive the framer,
row 20 also through a real socketpair.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest

from vhtrace.protocol import payloads, spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import Frame, Framer, Incomplete, OversizedStart, pack_header
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, DeviceType, ProtocolFeature, Side
from vhtrace.protocol.spec import ProtocolFeature as PF

GIB = 1 << 30
UADDR = 0x7F0000000000


def codes(analysis) -> list[str]:
    return [finding.code for finding in analysis.findings]


def region(gpa: int = 0, size: int = GIB, uaddr: int = UADDR, offset: int = 0) -> dict:
    return {
        "guest_phys_addr": gpa,
        "memory_size": size,
        "userspace_addr": uaddr,
        "mmap_offset": offset,
    }


INFLIGHT = {"mmap_size": 0x2000, "mmap_offset": 0, "num_queues": 1, "queue_size": 128}


@pytest.fixture
def blk(make_dialogue):
    """A vhost-user-blk conversation whose back-end reported 1 queue."""
    talk = make_dialogue(DeviceType.BLK)
    talk.negotiate(queues=1)
    return talk


def test_row_01_get_features_with_fds_it_does_not_use(negotiated) -> None:
    # sent in a loop to exhaust the back-end's fds: every one is reported
    for _ in range(3):
        analysis = negotiated.request("GET_FEATURES", fds=8)
        assert codes(analysis) == ["fd-count"]
        assert "carries 8 fds, GET_FEATURES takes none" in analysis.findings[0].text
        negotiated.reply("GET_FEATURES", {"features": 1 << 30})


def test_row_01_more_fds_than_any_implementation_accepts(negotiated) -> None:
    analysis = negotiated.request("SET_VRING_CALL", {"index": 0}, fds=9)
    assert codes(analysis) == ["fd-count", "fd-limit"]


def test_row_02_repeated_set_vring_num(negotiated) -> None:
    assert codes(negotiated.request("SET_VRING_NUM", {"index": 0, "num": 256})) == []
    repeat = negotiated.request("SET_VRING_NUM", {"index": 0, "num": 256})
    assert codes(repeat) == ["ring-repeat"]
    assert repeat.findings[0].severity is Severity.WARNING
    assert "already set by #" in repeat.findings[0].text


def test_row_03_log_base_whose_size_and_offset_wrap_u64(negotiated) -> None:
    fields = {"mmap_size": 0xFFFFFFFFFFFFF000, "mmap_offset": 0x2000}
    analysis = negotiated.request("SET_LOG_BASE", fields, fds=1)
    assert codes(analysis) == ["log-overflow"]


def test_row_04_ring_index_with_high_16_bits_set(negotiated) -> None:
    analysis = negotiated.request("SET_VRING_NUM", {"index": 0x00010000, "num": 256})
    assert codes(analysis) == ["ring-index"]
    assert "16-bit" in analysis.findings[0].text


@pytest.mark.parametrize(
    "fields",
    [
        {"op_code": 0, "key_len": 65},
        {"op_code": 0, "key_len": 16, "auth_key_len": 513},
        {"op_code": 1, "keylen": 1025},
    ],
    ids=["cipher key_len 65", "auth_key_len 513", "asym keylen 1025"],
)
def test_row_05_crypto_session_key_longer_than_its_buffer(negotiated, fields) -> None:
    analysis = negotiated.request("CREATE_CRYPTO_SESSION", {"layout": "qemu", **fields})
    assert codes(analysis) == ["crypto-key"]


def test_row_06_get_inflight_fd_repeated(negotiated) -> None:
    asked = {**INFLIGHT, "mmap_size": 0}
    assert codes(negotiated.request("GET_INFLIGHT_FD", asked)) == []
    negotiated.reply("GET_INFLIGHT_FD", INFLIGHT, layout="inflight", fds=1)
    repeat = negotiated.request("GET_INFLIGHT_FD", asked)
    assert codes(repeat) == ["inflight-repeat"]


def test_row_07_set_inflight_fd_with_more_queues_than_the_back_end_has(blk) -> None:
    analysis = blk.request("SET_INFLIGHT_FD", {**INFLIGHT, "num_queues": 0x80 * 2 + 2}, fds=1)
    assert codes(analysis) == ["inflight-queues"]


def test_row_07_num_queues_beyond_any_implementation_without_a_queue_count(negotiated) -> None:
    analysis = negotiated.request("SET_INFLIGHT_FD", {**INFLIGHT, "num_queues": 0x8001}, fds=1)
    assert codes(analysis) == ["inflight-queues"]


@pytest.mark.parametrize(
    ("name", "fds"), [("GET_INFLIGHT_FD", 3), ("SET_INFLIGHT_FD", 4)], ids=["get", "set"]
)
def test_row_08_inflight_requests_with_extra_fds(negotiated, name, fds) -> None:
    analysis = negotiated.request(name, INFLIGHT, fds=fds)
    assert codes(analysis) == ["fd-count"]


def test_row_09_ring_that_starts_in_a_region_and_runs_past_its_end(make_dialogue) -> None:
    talk = make_dialogue()
    # user addresses (no IOMMU platform): rings are checked against the regions
    talk.negotiate(virtio=1 << spec.VIRTIO_F_PROTOCOL_FEATURES | 1 << spec.VIRTIO_F_VERSION_1)
    talk.request("SET_MEM_TABLE", {"nregions": 1, "regions": [region(size=0x10000)]}, fds=1)
    talk.request("SET_VRING_NUM", {"index": 0, "num": 256})  # descriptor table: 4096 bytes
    fields = {
        "index": 0,
        "flags": 0,
        "desc_user_addr": UADDR + 0x10000 - 0x800,  # starts inside, ends 0x800 past the end
        "avail_user_addr": UADDR + 0x1000,
        "used_user_addr": UADDR + 0x2000,
        "log_guest_addr": 0,
    }
    analysis = talk.request("SET_VRING_ADDR", fields)
    assert codes(analysis) == ["ring-address"]
    assert "descriptor table" in analysis.findings[0].text
    assert "crosses the end" in analysis.findings[0].text


def test_row_10_memory_table_with_more_than_8_regions(negotiated) -> None:
    regions = [region(gpa=i * GIB, uaddr=UADDR + i * GIB) for i in range(9)]
    analysis = negotiated.request("SET_MEM_TABLE", {"nregions": 9, "regions": regions}, fds=9)
    assert "region-count" in codes(analysis)


def test_row_10_region_size_plus_mmap_offset_overflows(negotiated) -> None:
    bad = region(size=0x8000000000000000, offset=0x8000000000000000)
    analysis = negotiated.request("SET_MEM_TABLE", {"nregions": 1, "regions": [bad]}, fds=1)
    assert "region-overflow" in codes(analysis)
    assert any("mmap_offset" in f.text for f in analysis.findings)


@pytest.mark.parametrize("num", [100, 65536, 0], ids=["not a power of two", "above 32768", "0"])
def test_row_10_ring_size_not_a_power_of_two_or_too_big(negotiated, num) -> None:
    analysis = negotiated.request("SET_VRING_NUM", {"index": 0, "num": num})
    assert codes(analysis) == ["ring-size"]


def test_row_11_region_size_that_wraps_when_aligned_to_a_huge_page(negotiated) -> None:
    huge = region(gpa=0, size=0xFFFFFFFFFFF00000, uaddr=0)
    analysis = negotiated.request("SET_MEM_TABLE", {"nregions": 1, "regions": [huge]}, fds=1)
    assert "region-overflow" in codes(analysis)
    assert any("2 MiB huge page" in f.text for f in analysis.findings)


def test_row_12_short_header_then_end_of_stream_hands_back_the_fds() -> None:
    framer = Framer()
    framer.feed(pack_header(5, 1, 40)[:7], (11, 12))
    assert framer.events() == []
    leftover = framer.eof()
    assert isinstance(leftover, Incomplete)
    assert leftover.fds == (11, 12)  # the owner can close them: nothing leaks
    assert "7 bytes into a message header" in leftover.describe()


def test_row_12_header_claiming_more_than_the_payload_limit_with_fds(negotiated) -> None:
    framer = Framer()
    framer.feed(pack_header(1, 1, 0x10000) + bytes(100), (13,))
    start = framer.events()[0]
    assert start == OversizedStart(1, 1, 0x10000, (13,))
    # as the recorder sees it: cut short, the fds counted
    frame = Frame(start.request, start.flags, start.size, bytes(100))
    analysis = negotiated.send(frame, fds=1, complete=False)
    assert codes(analysis) == ["size-limit", "fd-count"]


def test_row_13_two_regions_with_two_fds_is_valid(negotiated) -> None:
    regions = [region(gpa=0), region(gpa=4 * GIB, uaddr=UADDR + GIB, offset=GIB)]
    analysis = negotiated.request("SET_MEM_TABLE", {"nregions": 2, "regions": regions}, fds=2)
    assert analysis.findings == []


@pytest.mark.parametrize("name", ["SET_VRING_CALL", "SET_VRING_KICK", "SET_VRING_ERR"])
def test_row_14_nofd_bit_with_zero_fds_is_valid(negotiated, name) -> None:
    analysis = negotiated.request(name, {"index": 0, "nofd": True}, fds=0)
    assert analysis.findings == []
    assert analysis.fields["nofd"] is True


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("SET_VRING_NUM", {"index": 1, "num": 128}),
        ("SET_VRING_BASE", {"index": 1, "num": 0}),
        ("GET_VRING_BASE", {"index": 1, "num": 0}),
        (
            "SET_VRING_ADDR",
            {
                "index": 1,
                "flags": 0,
                "desc_user_addr": 0,
                "used_user_addr": 0,
                "avail_user_addr": 0,
                "log_guest_addr": 0,
            },
        ),
    ],
)
def test_row_15_ring_index_beyond_the_queues_of_the_back_end(blk, name, fields) -> None:
    analysis = blk.request(name, fields)
    assert codes(analysis) == ["ring-index"]
    assert analysis.findings[0].severity is Severity.ERROR


def test_row_15_nregions_not_matching_the_fd_count(negotiated) -> None:
    analysis = negotiated.request("SET_MEM_TABLE", {"nregions": 1, "regions": [region()]}, fds=2)
    assert codes(analysis) == ["fd-count"]
    assert "one per region (1)" in analysis.findings[0].text


def test_row_15_inflight_num_queues_beyond_the_back_ends(blk) -> None:
    analysis = blk.request("SET_INFLIGHT_FD", {**INFLIGHT, "num_queues": 2}, fds=1)
    assert codes(analysis) == ["inflight-queues"]


def test_row_16_inflight_area_geometry_is_checked(blk) -> None:
    """Row 16 (last_batch_head >= desc_num) is about the contents of the shared
    inflight area, which never crosses the socket: there is no checker of the area's
    layout yet. What the wire shows is the area's geometry, which bounds desc_num:
    the GET_INFLIGHT_FD reply's queue count and size are checked."""
    blk.request("GET_INFLIGHT_FD", {**INFLIGHT, "mmap_size": 0})
    reply = blk.reply(
        "GET_INFLIGHT_FD",
        {**INFLIGHT, "num_queues": 2, "queue_size": 100},
        layout="inflight",
        fds=1,
    )
    assert codes(reply) == ["inflight-queues", "ring-size"]


def test_row_17_set_vring_base_index_beyond_the_queues(blk) -> None:
    analysis = blk.request("SET_VRING_BASE", {"index": 7, "num": 0})
    assert codes(analysis) == ["ring-index"]


@pytest.mark.parametrize("channel", [Channel.MAIN, Channel.BACKEND])
def test_row_18_request_code_not_in_the_spec(negotiated, channel) -> None:
    frame = Frame.build(0xFFFFFFFF, spec.VERSION)
    analysis = negotiated.send(frame, spec.requester(channel), channel)
    assert codes(analysis) == ["unknown-request"]
    assert analysis.name == "UNKNOWN(4294967295)"
    assert negotiated.conversation.close() == []  # and no reply is expected of it


def test_row_19_back_end_offering_bit_21_meaning_shmem(dialogue) -> None:
    dialogue.request("GET_FEATURES")
    dialogue.reply("GET_FEATURES", {"features": 1 << spec.VIRTIO_F_PROTOCOL_FEATURES})
    dialogue.request("GET_PROTOCOL_FEATURES")
    offer = 1 << ProtocolFeature.REPLY_ACK | 1 << ProtocolFeature.GPA_ADDRESSES
    reply = dialogue.reply("GET_PROTOCOL_FEATURES", {"features": offer})
    assert codes(reply) == ["rust-vmm-shmem-bit"]
    assert reply.findings[0].severity is Severity.WARNING
    # both dialects named, not one picked silently
    assert "GPA_ADDRESSES in QEMU >= 11.1" in reply.findings[0].text
    assert "SHMEM in rust-vmm vhost < 0.17" in reply.findings[0].text


def test_row_19_bits_21_and_22_together_are_not_flagged(dialogue) -> None:
    dialogue.request("GET_FEATURES")
    dialogue.reply("GET_FEATURES", {"features": 1 << spec.VIRTIO_F_PROTOCOL_FEATURES})
    dialogue.request("GET_PROTOCOL_FEATURES")
    offer = 1 << ProtocolFeature.GPA_ADDRESSES | 1 << ProtocolFeature.SHMEM
    assert codes(dialogue.reply("GET_PROTOCOL_FEATURES", {"features": offer})) == []


# --------------------------------------------------------------------------
# Row 20: coalesced requests, and SET_MEM_TABLE's fds on the right message
# --------------------------------------------------------------------------

TWO_REGIONS = {
    "nregions": 2,
    "regions": [region(gpa=0), region(gpa=4 * GIB, uaddr=UADDR + GIB, offset=GIB)],
}


def _qemu_burst() -> list[Frame]:
    """What QEMU sends without waiting: the fds belong to SET_MEM_TABLE."""
    return [
        build("SET_PROTOCOL_FEATURES", {"features": 0x922B}),
        build("SET_OWNER"),
        build("SET_MEM_TABLE", TWO_REGIONS),
        build("SET_VRING_NUM", {"index": 0, "num": 256}),
    ]


def test_row_20_fds_stay_on_set_mem_table_when_requests_are_coalesced() -> None:
    burst = _qemu_burst()
    framer = Framer()
    # read 1: the two requests before, coalesced; read 2 starts with SET_MEM_TABLE's
    # first byte (where the kernel hands out its fds) and runs into the next request
    framer.feed(burst[0].raw + burst[1].raw)
    framer.feed(burst[2].raw + burst[3].raw, (40, 41))
    frames = framer.events()
    assert [(f.request, f.fds) for f in frames] == [(16, ()), (3, ()), (5, (40, 41)), (8, ())]


def test_row_20_over_a_real_socketpair_the_fds_arrive_with_set_mem_table() -> None:
    from vhtrace.wire import MessageReader, close_fds, send_frame

    frontend, backend = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    memfds = [os.memfd_create("region0"), os.memfd_create("region1")]
    received: list[Frame] = []
    try:
        for frame in _qemu_burst():  # all sent before the back-end reads anything
            if frame.request == 5:
                frame = Frame.build(frame.request, frame.flags, frame.payload, tuple(memfds))
            send_frame(frontend, frame)
        frontend.shutdown(socket.SHUT_WR)
        reader = MessageReader(backend)
        while (frame := reader.read()) is not None:
            received.append(frame)
        assert reader.leftover is None
        assert [(f.request, len(f.fds)) for f in received] == [(16, 0), (3, 0), (5, 2), (8, 0)]
        # the very memfds that were sent, in order
        sent_inodes = [os.fstat(fd).st_ino for fd in memfds]
        assert [os.fstat(fd).st_ino for fd in received[2].fds] == sent_inodes
    finally:
        for frame in received:
            close_fds(frame.fds)
        close_fds(memfds)
        frontend.close()
        backend.close()


def test_old_crypto_layout_with_op_code_1_is_read_as_symmetric(negotiated) -> None:
    """The 632-byte layout has no asymmetric sessions: op_code 1 must not be taken for one."""
    analysis = negotiated.request(
        "CREATE_CRYPTO_SESSION", {"layout": "qemu-old", "op_code": 1, "key_len": 70}
    )
    assert codes(analysis) == ["crypto-key"]
    assert "key_len 70" in analysis.findings[0].text
    assert "op1" not in analysis.summary() and "key_len 70" in analysis.summary()


# ----------------------------------------------------------------------------
# Issue 16: rules as QEMU's docs/interop/vhost-user.rst, hw/virtio/vhost-user.c and rust-vmm
# ----------------------------------------------------------------------------


def shmem_map_bytes(flags: int) -> bytes:
    """VhostUserMMap: u8 shmid, u8 padding[7], u64 fd_offset, shm_offset, len, flags."""
    return struct.pack("<B7xQQQQ", 0, 0, 0x1000, 0x200000, flags)


def codes_past_the_mem_slots_warning(analysis) -> list[str]:
    """Our findings less 'postcopy-mem-slots' (postcopy with CONFIGURE_MEM_SLOTS is itself
    warned of, once per ADD_MEM_REG): what the ack handling adds."""
    return [code for code in codes(analysis) if code != "postcopy-mem-slots"]


def send_shmem_map(talk, flags: int):
    request_id = spec.lookup_request("SHMEM_MAP")
    assert request_id == (Channel.BACKEND, 9)
    frame = Frame.build(9, spec.VERSION, shmem_map_bytes(flags))
    return talk.send(frame, Side.BACKEND, Channel.BACKEND, fds=1)


@pytest.mark.parametrize(("flags", "text"), [(0, "ro"), (1, "rw")])
def test_shmem_map_bit_0_is_read_write_and_clear_is_read_only(flags: int, text: str) -> None:
    decoded = payloads.decode("shmem_map", shmem_map_bytes(flags))
    assert decoded.fields is not None
    assert decoded.summary().endswith(f" {text}")


@pytest.mark.parametrize("flags", [0, 1])
def test_shmem_map_with_the_defined_flags_has_no_finding(negotiated, flags: int) -> None:
    assert codes(send_shmem_map(negotiated, flags)) == []


@pytest.mark.parametrize("flags", [2, 3, 0x80])
def test_shmem_map_with_an_undefined_bit_is_an_error(negotiated, flags: int) -> None:
    analysis = send_shmem_map(negotiated, flags)
    assert codes(analysis) == ["shmem-flags"]
    finding = analysis.findings[0]
    assert finding.severity is Severity.ERROR
    assert f"flags 0x{flags:x}" in finding.text and "bit 0" in finding.text


def test_shmem_map_summary_names_undefined_bits() -> None:
    assert payloads.decode("shmem_map", shmem_map_bytes(3)).summary().endswith("rw +0x2")


def test_get_shared_object_reply_without_its_dmabuf_fd_is_an_error(negotiated) -> None:
    uuid = bytes(range(16))
    negotiated.send(Frame.build(41, spec.VERSION, uuid), Side.FRONTEND, Channel.MAIN)
    reply = Frame.build(41, spec.REPLY_FLAGS, struct.pack("<Q", 0))
    analysis = negotiated.send(reply, Side.BACKEND, Channel.MAIN, fds=0)
    assert analysis.findings, "a GET_SHARED_OBJECT reply without an fd passed unflagged"
    assert all(f.severity is Severity.ERROR for f in analysis.findings)


def test_get_shared_object_reply_with_its_fd_passes(negotiated) -> None:
    negotiated.send(Frame.build(41, spec.VERSION, bytes(16)), Side.FRONTEND, Channel.MAIN)
    reply = Frame.build(41, spec.REPLY_FLAGS, struct.pack("<Q", 0))
    assert codes(negotiated.send(reply, Side.BACKEND, Channel.MAIN, fds=1)) == []


def vring_index_bytes(index: int, num: int) -> bytes:
    """struct vhost_vring_state: unsigned int index, unsigned int num."""
    return struct.pack("<II", index, num)


def test_get_vring_base_num_is_reserved_and_must_be_0(negotiated) -> None:
    frame = Frame.build(11, spec.VERSION, vring_index_bytes(0, 5))
    analysis = negotiated.send(frame, Side.FRONTEND, Channel.MAIN)
    assert codes(analysis) == ["reserved-num"]
    assert "num 5" in analysis.findings[0].text


def test_get_vring_base_with_num_0_passes(negotiated) -> None:
    frame = Frame.build(11, spec.VERSION, vring_index_bytes(0, 0))
    assert codes(negotiated.send(frame, Side.FRONTEND, Channel.MAIN)) == []


@pytest.mark.parametrize("request_id", [29, 30])
def test_postcopy_listen_and_end_without_need_reply_are_flagged(negotiated, request_id) -> None:
    analysis = negotiated.send(Frame.build(request_id, spec.VERSION), Side.FRONTEND, Channel.MAIN)
    assert codes(analysis) == ["need-reply-missing"]
    assert "flags 0x1" in analysis.findings[0].text


@pytest.mark.parametrize("request_id", [29, 30])
def test_postcopy_listen_and_end_with_need_reply_pass(negotiated, request_id) -> None:
    flags = spec.VERSION | spec.FLAG_NEED_REPLY
    analysis = negotiated.send(Frame.build(request_id, flags), Side.FRONTEND, Channel.MAIN)
    assert codes(analysis) == []


def test_the_rows_that_always_set_need_reply_are_those_the_spec_names() -> None:
    rows = {
        row.name for row in spec.FRONTEND_REQUESTS + spec.BACKEND_REQUESTS if row.sets_need_reply
    }
    assert rows == {"IOTLB_MSG", "POSTCOPY_LISTEN", "POSTCOPY_END"}
    assert all(
        spec.REQUESTS[Channel.MAIN][spec.lookup_request(n)[1]].channel is Channel.MAIN for n in rows
    )


def listening_with_mem_slots(make_dialogue):
    """Past POSTCOPY_LISTEN, with CONFIGURE_MEM_SLOTS: the batch form of the memory table."""
    talk = make_dialogue()
    talk.negotiate(protocol=1 << PF.REPLY_ACK | 1 << PF.PAGEFAULT | 1 << PF.CONFIGURE_MEM_SLOTS)
    talk.request("POSTCOPY_ADVISE")
    talk.reply("POSTCOPY_ADVISE", layout="empty", fds=1)
    talk.request("POSTCOPY_LISTEN")
    talk.reply("POSTCOPY_LISTEN", {"value": 0}, layout="ack")
    return talk


def mem_region(gpa: int) -> dict:
    return {
        "guest_phys_addr": gpa,
        "memory_size": 1 << 30,
        "userspace_addr": 0x7F0000000000 + gpa,
        "mmap_offset": 0,
    }


def u64_ack(request_id: int):
    """QEMU's ack: the batch's last header, size 8, u64 0."""
    return Frame.build(request_id, spec.VERSION, struct.pack("<Q", 0))


def test_one_postcopy_ack_per_add_mem_reg_batch(make_dialogue) -> None:
    talk = listening_with_mem_slots(make_dialogue)
    for gpa in (0, 1 << 32):
        added = talk.request("ADD_MEM_REG", mem_region(gpa), fds=1)
        assert codes_past_the_mem_slots_warning(added) == []
        assert codes(talk.reply("ADD_MEM_REG", mem_region(gpa), layout="mem_region")) == []
    ack = talk.send(u64_ack(37))
    assert ack.role is Role.POSTCOPY_ACK and codes(ack) == []
    assert talk.conversation.close() == []


def test_postcopy_ack_after_only_removals_reuses_rem_mem_reg(make_dialogue) -> None:
    talk = listening_with_mem_slots(make_dialogue)
    talk.request("ADD_MEM_REG", mem_region(0), fds=1)
    talk.reply("ADD_MEM_REG", mem_region(0), layout="mem_region")
    talk.send(u64_ack(37))
    talk.request("REM_MEM_REG", mem_region(0))
    ack = talk.send(u64_ack(38))
    assert ack.role is Role.POSTCOPY_ACK and codes(ack) == []


def test_postcopy_ack_with_request_0_when_no_region_changed(make_dialogue) -> None:
    talk = listening_with_mem_slots(make_dialogue)
    ack = talk.send(u64_ack(0))
    assert ack.role is Role.POSTCOPY_ACK
    assert ack.name == "NONE"
    assert codes(ack) == []


def test_request_0_outside_postcopy_is_still_unknown(negotiated) -> None:
    assert codes(negotiated.send(u64_ack(0))) == ["unknown-request"]


def config_bytes(region: bytes) -> bytes:
    """VhostUserConfig: u32 offset, u32 size, u32 flags, then size bytes of config space."""
    return struct.pack("<III", 0, len(region), 0) + region


def test_get_config_requests_window_of_zeros_names_no_device_field() -> None:
    ctx = payloads.PayloadContext(device=spec.DeviceType.BLK)
    request = payloads.decode("config", config_bytes(bytes(57)), ctx)
    assert request.fields is not None and "device_config" not in request.fields
    assert not any("capacity" in line for line in request.details(ctx))


def test_get_config_reply_names_the_device_fields() -> None:
    ctx = payloads.PayloadContext(device=spec.DeviceType.BLK)
    reply = payloads.decode("config", config_bytes(struct.pack("<Q", 131072) + bytes(49)), ctx)
    assert reply.fields is not None
    assert reply.fields["device_config"]["capacity"] == 131072


def test_request_44_with_a_vring_state_names_both_dialects(negotiated) -> None:
    frame = Frame.build(44, spec.VERSION, vring_index_bytes(0, 0))
    analysis = negotiated.send(frame, Side.FRONTEND, Channel.MAIN)
    assert "dialect-44" in codes(analysis)
    text = next(f.text for f in analysis.findings if f.code == "dialect-44")
    assert "GET_SHMEM_CONFIG in QEMU" in text and "yc-libvhost-server" in text


def test_request_44_as_qemu_sends_it_has_no_dialect_finding(negotiated) -> None:
    analysis = negotiated.send(Frame.build(44, spec.VERSION), Side.FRONTEND, Channel.MAIN)
    assert codes(analysis) == []
    reply = negotiated.send(Frame.build(44, spec.REPLY_FLAGS, struct.pack("<Q", 0)),
                            Side.BACKEND, Channel.MAIN)  # fmt: skip
    assert "dialect-44" in codes(reply)


def test_an_iommu_device_needs_backend_req_and_reply_ack(make_dialogue) -> None:
    talk = make_dialogue()
    iommu = 1 << spec.VIRTIO_F_PROTOCOL_FEATURES | 1 << spec.VIRTIO_F_ACCESS_PLATFORM
    steps = talk.negotiate(protocol=1 << PF.REPLY_ACK, virtio=iommu)
    set_features = steps[-1]
    assert codes(set_features) == ["iommu-features"]
    assert "without BACKEND_REQ negotiated" in set_features.findings[0].text


def test_an_iommu_device_with_both_features_passes(make_dialogue) -> None:
    talk = make_dialogue()
    iommu = 1 << spec.VIRTIO_F_PROTOCOL_FEATURES | 1 << spec.VIRTIO_F_ACCESS_PLATFORM
    steps = talk.negotiate(protocol=1 << PF.REPLY_ACK | 1 << PF.BACKEND_REQ, virtio=iommu)
    assert codes(steps[-1]) == []
