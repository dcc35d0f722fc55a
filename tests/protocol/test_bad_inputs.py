"""The 20 rows of bad-inputs.md, one test each: the malformed input yields its finding.

Rows 13 and 14 are valid inputs that real implementations wrongly rejected:
they must yield no finding. Rows 12 and 20 are about framing (short reads,
oversized headers, coalesced requests with fds), so they drive the framer,
row 20 also through a real socketpair.
"""

from __future__ import annotations

import os
import socket

import pytest

from vhtrace.protocol import spec
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import Frame, Framer, Incomplete, OversizedStart, pack_header
from vhtrace.protocol.messages import build
from vhtrace.protocol.spec import Channel, DeviceType, ProtocolFeature

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
