"""The scapy layers, on hand-written bytes and on hand-built packets."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.packet import Padding, Raw, raw

from vhtrace.protocol import payloads, spec
from vhtrace.protocol.messages import build
from vhtrace.protocol.payloads import PayloadContext
from vhtrace.scapy import (
    LAYOUT_CLASSES,
    VhostUser,
    VhostUserAck,
    VhostUserBackend,
    VhostUserConfig,
    VhostUserCryptoSessionOld,
    VhostUserCryptoSessionRaw,
    VhostUserFeatures,
    VhostUserInflight,
    VhostUserIotlb,
    VhostUserMemRegion,
    VhostUserMemTable,
    VhostUserMemTableXen,
    VhostUserProtocolFeatures,
    VhostUserRegion,
    VhostUserSharedUuid,
    VhostUserShmemConfig,
    VhostUserVringAddr,
    VhostUserVringArea,
    VhostUserVringBase,
    VhostUserVringBasePacked,
    VhostUserVringFd,
    VhostUserVringIndex,
    VhostUserVringState,
    payload_class,
)


def le32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def test_every_layout_has_a_class() -> None:
    assert set(LAYOUT_CLASSES) == set(payloads.LAYOUTS)


def test_header_and_vring_state_field_by_field() -> None:
    data = (
        le32(8)  # request: SET_VRING_NUM
        + le32(0x1)  # flags: version 1
        + le32(8)  # size
        + le32(0)  # vring index
        + le32(256)  # num
    )
    packet = VhostUser(data)
    assert (packet.request, int(packet.flags), packet.size) == (8, 1, 8)
    assert packet.sprintf("%VhostUser.request%") == "SET_VRING_NUM"
    assert isinstance(packet.payload, VhostUserVringState)
    assert (packet.index, packet.num) == (0, 256)
    assert raw(packet) == data


def test_building_by_name_fills_in_size() -> None:
    packet = VhostUser(request="SET_VRING_NUM") / VhostUserVringState(index=0, num=256)
    assert raw(packet) == build("SET_VRING_NUM", {"index": 0, "num": 256}).raw
    assert VhostUser(raw(packet)).size == 8


def test_request_names_accept_aliases_and_c_names() -> None:
    assert VhostUser(request="SET_SLAVE_REQ_FD").request == 21
    assert VhostUser(request="VHOST_USER_SET_BACKEND_REQ_FD").request == 21
    assert VhostUserBackend(request="SLAVE_VRING_CALL").request == 4
    assert VhostUserBackend(request="VHOST_USER_BACKEND_SHMEM_MAP").request == 9


def test_flags_by_name() -> None:
    packet = VhostUser(request="GET_FEATURES", flags="VERSION+REPLY") / VhostUserFeatures(
        features="VERSION_1+PROTOCOL_FEATURES"
    )
    data = raw(packet)
    assert data[4:8] == le32(spec.REPLY_FLAGS)
    assert data[12:] == struct.pack("<Q", 1 << 32 | 1 << 30)
    assert VhostUser(data).features.VERSION_1


def test_reply_uses_the_tables_reply_layout() -> None:
    request = le32(11, 1, 8) + le32(0, 0)  # GET_VRING_BASE ring 0
    reply = le32(11, 5, 8) + le32(0, 42)  # its reply: ring 0 at 42
    assert isinstance(VhostUser(request).payload, VhostUserVringIndex)
    assert isinstance(VhostUser(reply).payload, VhostUserVringBase)
    assert VhostUser(reply).num == 42
    ack = le32(8, 5, 8) + struct.pack("<Q", 0)  # SET_VRING_NUM reply: an ack
    assert isinstance(VhostUser(ack).payload, VhostUserAck)


def test_channels_name_the_same_id_differently() -> None:
    data = le32(3, 1, 24) + struct.pack("<QQQ", 0x102, 0x1000, 0x2000)
    assert VhostUser(data).sprintf("%VhostUser.request%") == "SET_OWNER"
    packet = VhostUserBackend(data)
    assert packet.sprintf("%VhostUserBackend.request%") == "VRING_HOST_NOTIFIER_MSG"
    area = packet[VhostUserVringArea]
    assert (area.index, area.nofd, area.size, area.offset) == (2, 1, 0x1000, 0x2000)


def test_layout_hint_reads_a_postcopy_reply_as_a_memory_table() -> None:
    regions = [{"guest_phys_addr": 0, "memory_size": 1 << 30, "userspace_addr": 0x7F00,
                "mmap_offset": 0}]  # fmt: skip
    data = build("SET_MEM_TABLE", {"regions": regions}, reply=True, layout="mem_table").raw
    assert isinstance(VhostUser(data).payload, VhostUserAck)  # the table says: an ack
    packet = VhostUser(data, layout="mem_table")
    assert packet[VhostUserMemTable].regions[0].memory_size == 1 << 30
    assert raw(packet) == data


def test_vring_fd_bits() -> None:
    # u64 0x102: ring 2, bit 8 = no fd; then one reserved bit (bit 12).
    packet = VhostUser(le32(13, 1, 8) + struct.pack("<Q", 0x1102))
    fd = packet[VhostUserVringFd]
    assert (fd.index, fd.nofd, fd.reserved) == (2, 1, 0x1000 >> 9)
    assert raw(VhostUserVringFd(index=1, nofd=1)) == struct.pack("<Q", 0x101)


def test_packed_vring_base() -> None:
    # num: avail 5 with wrap 1 (0x8005), used 3 with wrap 0 (0x0003)
    payload = le32(0, 0x0003_8005)
    packed = VhostUserVringBasePacked(payload)
    assert (packed.last_avail_idx, packed.avail_wrap, packed.used_idx, packed.used_wrap) == (
        5, 1, 3, 0,
    )  # fmt: skip
    ctx = PayloadContext(packed=True)
    assert payload_class("vring_base", ctx) is VhostUserVringBasePacked
    fields = {"index": 0, "last_avail_idx": 5, "avail_wrap": 1, "used_idx": 3, "used_wrap": 0}
    assert payloads.encode("vring_base", fields, ctx) == payload


def test_xen_regions_are_40_bytes() -> None:
    ctx = PayloadContext(xen_mmap=True)
    region = {"guest_phys_addr": 0x1000, "memory_size": 0x2000, "userspace_addr": 0x3000,
              "mmap_offset": 0, "xen_mmap_flags": 0x101, "domid": 7}  # fmt: skip
    data = payloads.encode("mem_table", {"regions": [region, region]}, ctx)
    assert len(data) == 8 + 2 * 40
    table = payload_class("mem_table", ctx)(data)
    assert isinstance(table, VhostUserMemTableXen)
    assert [r.domid for r in table.regions] == [7, 7]
    assert raw(table) == data


def test_mem_region_and_table_fields() -> None:
    data = struct.pack("<Q", 0) + struct.pack("<QQQQ", 1 << 32, 1 << 30, 0x7F0000000000, 0x80)
    region = VhostUserMemRegion(data)
    assert (region.guest_phys_addr, region.memory_size, region.userspace_addr) == (
        1 << 32, 1 << 30, 0x7F0000000000,
    )  # fmt: skip
    table = VhostUserMemTable(nregions=None, regions=[VhostUserRegion(guest_phys_addr=5)])
    assert raw(table)[:4] == le32(1)


def test_config_size_follows_its_region() -> None:
    assert raw(VhostUserConfig(offset=4, region=b"\x01\x02")) == le32(4, 2, 0) + b"\x01\x02"


def test_enums_and_padding_of_structs() -> None:
    data = struct.pack("<QQQBB6s", 0x1000, 0x2000, 0x3000, 3, 2, b"\xff" * 6)
    iotlb = VhostUserIotlb(data)
    assert iotlb.sprintf("%type% %perm%") == "UPDATE rw"
    assert iotlb.padding == b"\xff" * 6
    assert raw(iotlb) == data
    inflight = VhostUserInflight(struct.pack("<QQHHI", 0x2140, 0, 2, 256, 0xDEAD))
    assert (inflight.num_queues, inflight.queue_size, inflight.padding) == (2, 256, 0xDEAD)


def test_shared_uuid_is_big_endian() -> None:
    value = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    assert VhostUserSharedUuid(value.bytes).uuid == value


def test_shmem_config_is_padded_to_256_sizes() -> None:
    data = raw(VhostUserShmemConfig(nregions=1, memory_sizes=[1 << 20]))
    assert len(data) == payloads.LAYOUTS["shmem_config"].size
    assert data == payloads.encode("shmem_config", {"nregions": 1, "memory_sizes": [1 << 20]})


def test_crypto_session_layout_by_size() -> None:
    old = payloads.encode("crypto_session", {"layout": "qemu-old", "session_id": 7, "key_len": 16})
    assert isinstance(VhostUser(le32(26, 5, len(old)) + old).payload, VhostUserCryptoSessionOld)
    odd = le32(26, 5, 3) + b"abc"
    assert isinstance(VhostUser(odd).payload, VhostUserCryptoSessionRaw)
    new = payloads.encode("crypto_session", {"op_code": 1, "algo": 2, "session_id": -1})
    packet = VhostUser(le32(26, 1, len(new)) + new)
    assert (packet.op_code, packet.algo, packet.session_id) == (1, 2, -1)
    assert raw(packet)[12:] == new


MALFORMED = {
    "extra bytes in the payload": le32(8, 1, 12) + le32(0, 256) + b"\xaa\xbb\xcc\xdd",
    "short payload": le32(9, 1, 8) + bytes(8),
    "unknown request": le32(99, 1, 4) + b"\x01\x02\x03\x04",
    "reserved flags": le32(1, 0x41, 0),
    "size beyond the data": le32(10, 1, 8) + b"\x01\x00",
    "bytes after size": le32(3, 1, 0) + b"junk",
    "cut header": b"\x08\x00\x00\x00\x01",
    "nregions beyond the data": le32(5, 1, 40) + le32(8, 0) + bytes(32),
    "empty layout with bytes": le32(3, 1, 2) + b"\x01\x02",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_messages_round_trip(data: bytes) -> None:
    for cls in (VhostUser, VhostUserBackend):
        packet = cls(data)
        assert raw(packet) == data
        packet.summary()
        packet.show(dump=True)


def test_where_the_bytes_go() -> None:
    extra = VhostUser(MALFORMED["extra bytes in the payload"])
    assert extra[Raw].load == b"\xaa\xbb\xcc\xdd"  # inside size, beyond the layout
    after = VhostUser(MALFORMED["bytes after size"])
    assert after[Padding].load == b"junk"  # after size
    assert isinstance(VhostUser(MALFORMED["short payload"]).payload, Raw)
    cut = VhostUser(MALFORMED["cut header"])
    assert cut.request == 8 and "cut inside its header" in cut.summary()


@settings(max_examples=300, deadline=None)
@given(
    request=st.integers(0, 50),
    flags=st.sampled_from([0x1, 0x5, 0x9, 0x0, 0xFFFFFFFF]),
    payload=st.binary(max_size=120),
    size_delta=st.integers(-8, 8),
    layout=st.none() | st.sampled_from(sorted(payloads.LAYOUTS)),
)
def test_any_bytes_round_trip(
    request: int, flags: int, payload: bytes, size_delta: int, layout: str | None
) -> None:
    size = max(0, len(payload) + size_delta)
    data = le32(request, flags, size) + payload
    for cls in (VhostUser, VhostUserBackend):
        assert raw(cls(data, layout=layout)) == data


def test_vring_addr_flags() -> None:
    addr = VhostUserVringAddr(flags="LOG", desc_user_addr=0x1000)
    data = raw(addr)
    assert data[4:8] == le32(spec.VRING_F_LOG)
    assert payloads.decode("vring_addr", data).fields["desc_user_addr"] == 0x1000


def test_protocol_feature_names_come_from_the_spec() -> None:
    features = VhostUserProtocolFeatures(struct.pack("<Q", 1 << spec.ProtocolFeature.SHMEM))
    assert features.features.SHMEM
    assert not features.features.GPA_ADDRESSES
