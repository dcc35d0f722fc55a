"""Issue 16: rules as QEMU's docs/interop/vhost-user.rst, hw/virtio/vhost-user.c and rust-vmm
vhost's message.rs state them.

Each test writes the payload bytes out as the spec lays them, so that a drift in our
layouts fails here and not only in a round trip through our own encoder.
"""

from __future__ import annotations

import struct

import pytest

from vhtrace.protocol import payloads, spec
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.spec import Channel, Side


def shmem_map_bytes(flags: int) -> bytes:
    """VhostUserMMap: u8 shmid, u8 padding[7], u64 fd_offset, shm_offset, len, flags."""
    return struct.pack("<B7xQQQQ", 0, 0, 0x1000, 0x200000, flags)


def codes(analysis) -> list[str]:
    return [finding.code for finding in analysis.findings]


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
