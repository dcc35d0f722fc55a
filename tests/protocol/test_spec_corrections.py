"""Issue 16: rules as QEMU's docs/interop/vhost-user.rst, hw/virtio/vhost-user.c and rust-vmm
vhost's message.rs state them.

Each test writes the payload bytes out as the spec lays them, so that a drift in our
layouts fails here and not only in a round trip through our own encoder.
"""

from __future__ import annotations

import struct

import pytest

from vhtrace.protocol import payloads, spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Channel, Side
from vhtrace.protocol.spec import ProtocolFeature as PF


def shmem_map_bytes(flags: int) -> bytes:
    """VhostUserMMap: u8 shmid, u8 padding[7], u64 fd_offset, shm_offset, len, flags."""
    return struct.pack("<B7xQQQQ", 0, 0, 0x1000, 0x200000, flags)


def codes(analysis) -> list[str]:
    return [finding.code for finding in analysis.findings]


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
