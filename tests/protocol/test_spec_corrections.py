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
