"""Every payload layout: hand-written bytes <-> fields, byte-exact both ways.

The bytes are written out field by field from the layouts in the protocol
reference (section 6), little-endian, without going through ``struct``, so
that a wrong offset or width in a codec shows up as a mismatch here.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vhtrace.protocol import payloads
from vhtrace.protocol.payloads import DEFAULT_CONTEXT, PayloadContext

PACKED = PayloadContext(packed=True)
XEN = PayloadContext(xen_mmap=True)


def le(value: int, width: int) -> bytes:
    """An unsigned little-endian integer of ``width`` bytes."""
    return value.to_bytes(width, "little")


def le_signed(value: int, width: int) -> bytes:
    return value.to_bytes(width, "little", signed=True)


def region_bytes(gpa: int, size: int, uaddr: int, offset: int) -> bytes:
    return le(gpa, 8) + le(size, 8) + le(uaddr, 8) + le(offset, 8)


def region(gpa: int, size: int, uaddr: int, offset: int, **extra: int) -> dict[str, int]:
    return {
        "guest_phys_addr": gpa,
        "memory_size": size,
        "userspace_addr": uaddr,
        "mmap_offset": offset,
        **extra,
    }


GIB = 1 << 30
KEY16 = bytes(range(1, 17))

# --------------------------------------------------------------------------
# Hand-written cases: (id, layout, context, bytes, fields)
# --------------------------------------------------------------------------

CASES: list[tuple[str, str, PayloadContext, bytes, dict[str, Any]]] = [
    ("empty", "empty", DEFAULT_CONTEXT, b"", {}),
    (
        "u64",
        "u64",
        DEFAULT_CONTEXT,
        bytes.fromhex("8877665544332211"),
        {"value": 0x1122334455667788},
    ),
    ("ack ok", "ack", DEFAULT_CONTEXT, bytes(8), {"value": 0}),
    ("ack failure", "ack", DEFAULT_CONTEXT, le(1, 8), {"value": 1}),
    ("log reply, empty (QEMU accepts any size)", "log_reply", DEFAULT_CONTEXT, b"", {}),
    ("log reply, u64", "log_reply", DEFAULT_CONTEXT, le(0, 8), {"value": 0}),
    (
        "virtio features: PROTOCOL_FEATURES (30) | VERSION_1 (32)",
        "virtio_features",
        DEFAULT_CONTEXT,
        bytes.fromhex("0000004001000000"),
        {"features": 1 << 30 | 1 << 32},
    ),
    (
        "protocol features 0x922b",
        "protocol_features",
        DEFAULT_CONTEXT,
        bytes.fromhex("2b92000000000000"),
        {"features": 0x922B},
    ),
    (
        "status ACK|DRIVER|DRIVER_OK|FEATURES_OK",
        "status",
        DEFAULT_CONTEXT,
        le(0xF, 8),
        {"status": 15},
    ),
    (
        "vring fd: index 3 with NOFD (bit 8)",
        "vring_fd",
        DEFAULT_CONTEXT,
        bytes.fromhex("0301000000000000"),
        {"index": 3, "nofd": True, "reserved": 0},
    ),
    (
        "vring fd: reserved bit 32 kept",
        "vring_fd",
        DEFAULT_CONTEXT,
        bytes.fromhex("0200000001000000"),
        {"index": 2, "nofd": False, "reserved": 1 << 32},
    ),
    (
        "rarp: mac then 2 bytes of padding",
        "rarp_mac",
        DEFAULT_CONTEXT,
        bytes.fromhex("525400123456abcd"),
        {"mac": "52:54:00:12:34:56", "padding": b"\xab\xcd"},
    ),
    (
        "device state result: error 5, NOFD",
        "device_state_result",
        DEFAULT_CONTEXT,
        bytes.fromhex("0501000000000000"),
        {"error": 5, "nofd": True, "reserved": 0},
    ),
    (
        "vring state: index 1, num 256",
        "vring_state",
        DEFAULT_CONTEXT,
        bytes.fromhex("0100000000010000"),
        {"index": 1, "num": 256},
    ),
    ("vring index", "vring_index", DEFAULT_CONTEXT, le(7, 4) + le(0, 4), {"index": 7, "num": 0}),
    ("vring enable", "vring_enable", DEFAULT_CONTEXT, le(0, 4) + le(1, 4), {"index": 0, "num": 1}),
    (
        "vring endian BE",
        "vring_endian",
        DEFAULT_CONTEXT,
        le(2, 4) + le(1, 4),
        {"index": 2, "num": 1},
    ),
    (
        "vring base, split: bits 0-15 next avail, 16-31 reserved",
        "vring_base",
        DEFAULT_CONTEXT,
        # index 1; num 0x0003_0102: next_avail 0x102, reserved 3
        bytes.fromhex("0100000002010300"),
        {"index": 1, "num": 0x30102, "next_avail": 0x102, "reserved": 3},
    ),
    (
        "vring base, packed: avail idx/wrap in 0-15, used idx/wrap in 16-31",
        "vring_base",
        PACKED,
        # num 0x8003_8005: last_avail_idx 5, avail_wrap 1, used_idx 3, used_wrap 1
        bytes.fromhex("0000000005800380"),
        {
            "index": 0,
            "num": 0x80038005,
            "last_avail_idx": 5,
            "avail_wrap": 1,
            "used_idx": 3,
            "used_wrap": 1,
        },
    ),
    (
        "vring addr: desc, USED, avail, log (in that order)",
        "vring_addr",
        DEFAULT_CONTEXT,
        le(1, 4) + le(1, 4) + le(0x1000, 8) + le(0x2000, 8) + le(0x3000, 8) + le(0x4000, 8),
        {
            "index": 1,
            "flags": 1,
            "desc_user_addr": 0x1000,
            "used_user_addr": 0x2000,
            "avail_user_addr": 0x3000,
            "log_guest_addr": 0x4000,
        },
    ),
    (
        "memory table, 2 regions",
        "mem_table",
        DEFAULT_CONTEXT,
        le(2, 4)  # nregions
        + le(0, 4)  # padding
        + region_bytes(0, 2 * GIB, 0x7F0000000000, 0)
        + region_bytes(4 * GIB, GIB, 0x7F0080000000, 2 * GIB),
        {
            "nregions": 2,
            "padding": 0,
            "regions": [
                region(0, 2 * GIB, 0x7F0000000000, 0),
                region(4 * GIB, GIB, 0x7F0080000000, 2 * GIB),
            ],
        },
    ),
    (
        "memory table, padding word kept",
        "mem_table",
        DEFAULT_CONTEXT,
        le(0, 4) + le(0xDEADBEEF, 4),
        {"nregions": 0, "padding": 0xDEADBEEF, "regions": []},
    ),
    (
        "memory table with XEN_MMAP: 40-byte regions with flags and domid",
        "mem_table",
        XEN,
        le(1, 4)
        + le(0, 4)
        + region_bytes(0, GIB, 0x1000, 0)
        + le(0x101, 4)  # xen_mmap_flags: foreign | map-on-demand
        + le(7, 4),  # domid
        {
            "nregions": 1,
            "padding": 0,
            "regions": [region(0, GIB, 0x1000, 0, xen_mmap_flags=0x101, domid=7)],
        },
    ),
    (
        "single region: u64 padding then the region",
        "mem_region",
        DEFAULT_CONTEXT,
        le(0, 8) + region_bytes(4 * GIB, GIB, 0x7F0080000000, 2 * GIB),
        {"padding": 0, **region(4 * GIB, GIB, 0x7F0080000000, 2 * GIB)},
    ),
    (
        "single region with XEN_MMAP",
        "mem_region",
        XEN,
        le(5, 8) + region_bytes(0, GIB, 0, 0) + le(2, 4) + le(1, 4),
        {"padding": 5, **region(0, GIB, 0, 0, xen_mmap_flags=2, domid=1)},
    ),
    (
        "log: mmap_size, mmap_offset",
        "log",
        DEFAULT_CONTEXT,
        le(0x10000, 8) + le(0x2000, 8),
        {"mmap_size": 0x10000, "mmap_offset": 0x2000},
    ),
    (
        "iotlb: iova, size, uaddr, perm, type, 6 bytes tail padding (kept)",
        "iotlb",
        DEFAULT_CONTEXT,
        le(0x1000, 8) + le(0x2000, 8) + le(0x7F00, 8) + b"\x03" + b"\x02" + b"\xaa" * 6,
        {
            "iova": 0x1000,
            "size": 0x2000,
            "uaddr": 0x7F00,
            "perm": 3,
            "type": 2,
            "padding": b"\xaa" * 6,
        },
    ),
    (
        "config with region bytes",
        "config",
        DEFAULT_CONTEXT,
        le(4, 4) + le(8, 4) + le(1, 4) + bytes.fromhex("0102030405060708"),
        {"offset": 4, "size": 8, "flags": 1, "region": bytes.fromhex("0102030405060708")},
    ),
    (
        "config whose size field disagrees with its bytes (kept as sent)",
        "config",
        DEFAULT_CONTEXT,
        le(0, 4) + le(60, 4) + le(0, 4) + b"\x01\x02",
        {"offset": 0, "size": 60, "flags": 0, "region": b"\x01\x02"},
    ),
    (
        "vring area: u64 index/NOFD, size, offset",
        "vring_area",
        DEFAULT_CONTEXT,
        le(0x102, 8) + le(0x1000, 8) + le(0x3000, 8),
        {"index": 2, "nofd": True, "reserved": 0, "size": 0x1000, "offset": 0x3000},
    ),
    (
        "inflight: 24 bytes including 4 bytes of tail padding",
        "inflight",
        DEFAULT_CONTEXT,
        le(0x2000, 8) + le(0x40, 8) + le(2, 2) + le(128, 2) + le(0x55, 4),
        {
            "mmap_size": 0x2000,
            "mmap_offset": 0x40,
            "num_queues": 2,
            "queue_size": 128,
            "padding": 0x55,
        },
    ),
    (
        "shared object UUID (first fields big-endian, i.e. bytes in order)",
        "shared_uuid",
        DEFAULT_CONTEXT,
        bytes.fromhex("123456789abcdef00112233445566778"),
        {"uuid": "12345678-9abc-def0-0112-233445566778"},
    ),
    (
        "device state transfer: load, stopped",
        "device_state",
        DEFAULT_CONTEXT,
        le(1, 4) + le(0, 4),
        {"direction": 1, "phase": 0},
    ),
    (
        "shmem map: shmid, 7 bytes padding, fd_offset, shm_offset, len, flags",
        "shmem_map",
        DEFAULT_CONTEXT,
        b"\x03" + b"\x00" * 7 + le(0x1000, 8) + le(0x2000, 8) + le(0x3000, 8) + le(3, 8),
        {
            "shmid": 3,
            "padding": b"\x00" * 7,
            "fd_offset": 0x1000,
            "shm_offset": 0x2000,
            "len": 0x3000,
            "flags": 3,
        },
    ),
    (
        "shmem config: nregions, padding, 256 u64 sizes",
        "shmem_config",
        DEFAULT_CONTEXT,
        le(2, 4) + le(0, 4) + le(0x100000, 8) + le(0x200000, 8) + bytes(8 * 254),
        {"nregions": 2, "padding": 0, "memory_sizes": [0x100000, 0x200000] + [0] * 254},
    ),
]


def _sym_info(**values: int) -> bytes:
    """CryptoDevBackendSymSessionInfo as QEMU lays it out now (48 bytes)."""
    return (
        b"".join(
            le(values.get(name, 0), 4)
            for name in (
                "cipher_alg",
                "key_len",
                "hash_alg",
                "hash_result_len",
                "auth_key_len",
                "add_len",
            )
        )
        + bytes([values.get("op_type", 0), values.get("direction", 0), 0, 0])
        + b"\xee" * 4  # padding before the pointers: left as the sender had it
        + le(values.get("cipher_key_ptr", 0), 8)
        + le(values.get("auth_key_ptr", 0), 8)
    )


CRYPTO_SYM = (
    le(0, 8)  # op_code 0: symmetric
    + _sym_info(cipher_alg=3, key_len=16, op_type=1, direction=1, cipher_key_ptr=0x5555AAAA0000)
    + KEY16
    + bytes(48)  # key[64]
    + bytes(512)  # auth_key[512]
    + b"\x77" * 432  # rest of the union (the asym member is larger)
    + le_signed(-1, 8)  # session_id
)
CRYPTO_ASYM = (
    le(1, 8)  # op_code 1: asymmetric
    + le(2, 4)  # algo
    + le(1, 4)  # keytype
    + le(256, 4)  # keylen
    + b"\xee" * 4  # padding before the key pointer
    + le(0x6666, 8)  # key pointer (meaningless on the wire)
    + le(1, 4)  # rsa padding_algo
    + le(4, 4)  # rsa hash_algo
    + b"\x42" * 256
    + bytes(1024 - 256)  # key[1024]
    + le(9, 8)  # session_id
)
CRYPTO_OLD = (
    le_signed(12, 8)  # session_id first
    + le(0, 4)  # op_code inside the sym info
    + b"".join(le(v, 4) for v in (3, 16, 1, 20, 32, 0))
    + bytes([1, 0, 1, 2])  # op_type, direction, hash_mode, alg_chain_order
    + le(0x1111, 8)
    + le(0x2222, 8)
    + KEY16
    + bytes(48)
    + b"\x33" * 32
    + bytes(480)
)

CASES += [
    (
        "crypto session, current layout (1072 bytes), symmetric",
        "crypto_session",
        DEFAULT_CONTEXT,
        CRYPTO_SYM,
        {
            "layout": "qemu",
            "op_code": 0,
            "session_id": -1,
            "cipher_alg": 3,
            "key_len": 16,
            "hash_alg": 0,
            "hash_result_len": 0,
            "auth_key_len": 0,
            "add_len": 0,
            "op_type": 1,
            "direction": 1,
            "hash_mode": 0,
            "alg_chain_order": 0,
            "info_padding": b"\xee" * 4,
            "cipher_key_ptr": 0x5555AAAA0000,
            "auth_key_ptr": 0,
            "key": KEY16 + bytes(48),
            "auth_key": bytes(512),
            "union_tail": b"\x77" * 432,
        },
    ),
    (
        "crypto session, current layout (1072 bytes), asymmetric",
        "crypto_session",
        DEFAULT_CONTEXT,
        CRYPTO_ASYM,
        {
            "layout": "qemu",
            "op_code": 1,
            "session_id": 9,
            "algo": 2,
            "keytype": 1,
            "keylen": 256,
            "info_padding": b"\xee" * 4,
            "key_ptr": 0x6666,
            "param0": 1,
            "param1": 4,
            "key": b"\x42" * 256 + bytes(768),
            "union_tail": b"",
        },
    ),
    (
        "crypto session, older layout (632 bytes)",
        "crypto_session",
        DEFAULT_CONTEXT,
        CRYPTO_OLD,
        {
            "layout": "qemu-old",
            "session_id": 12,
            "op_code": 0,
            "cipher_alg": 3,
            "key_len": 16,
            "hash_alg": 1,
            "hash_result_len": 20,
            "auth_key_len": 32,
            "add_len": 0,
            "op_type": 1,
            "direction": 0,
            "hash_mode": 1,
            "alg_chain_order": 2,
            "cipher_key_ptr": 0x1111,
            "auth_key_ptr": 0x2222,
            "key": KEY16 + bytes(48),
            "auth_key": b"\x33" * 32 + bytes(480),
        },
    ),
    (
        "crypto session of an unknown size: kept raw",
        "crypto_session",
        DEFAULT_CONTEXT,
        bytes(range(100)),
        {"layout": "unknown", "raw": bytes(range(100))},
    ),
]


@pytest.mark.parametrize(
    ("layout", "ctx", "data", "fields"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_hand_written_bytes_decode_and_encode_back_exactly(
    layout: str, ctx: PayloadContext, data: bytes, fields: dict[str, Any]
) -> None:
    decoded = payloads.decode(layout, data, ctx)
    assert decoded.error is None
    assert decoded.fields == fields
    assert payloads.encode(layout, fields, ctx) == data


def test_every_layout_has_a_hand_written_case() -> None:
    assert {case[1] for case in CASES} == set(payloads.LAYOUTS)


def test_crypto_session_sizes_are_the_two_known_qemu_layouts() -> None:
    assert len(CRYPTO_SYM) == len(CRYPTO_ASYM) == 1072
    assert len(CRYPTO_OLD) == 632


def test_vring_base_encodes_from_its_split_or_packed_parts() -> None:
    split = payloads.encode("vring_base", {"index": 1, "next_avail": 0x102, "reserved": 3})
    assert split == bytes.fromhex("0100000002010300")
    packed = payloads.encode(
        "vring_base",
        {"index": 0, "last_avail_idx": 5, "avail_wrap": 1, "used_idx": 3, "used_wrap": 1},
        PACKED,
    )
    assert packed == bytes.fromhex("0000000005800380")


def test_memory_table_region_count_is_taken_from_the_regions_when_not_given() -> None:
    data = payloads.encode("mem_table", {"regions": [region(0, GIB, 0x1000, 0)]})
    assert data[:4] == le(1, 4)
    assert len(data) == 8 + 32


@pytest.mark.parametrize(
    ("layout", "data", "needed"),
    [
        ("u64", b"\x01" * 7, 8),
        ("vring_addr", bytes(39), 40),
        ("mem_region", bytes(39), 40),
        ("config", bytes(11), 12),
        ("shared_uuid", bytes(15), 16),
        ("log_reply", bytes(4), 8),
    ],
)
def test_a_payload_too_short_for_its_layout_gives_an_error_not_an_exception(
    layout: str, data: bytes, needed: int
) -> None:
    decoded = payloads.decode(layout, data)
    assert decoded.fields is None
    assert f"needs {needed} bytes, got {len(data)}" in decoded.error
    assert decoded.summary().startswith("<")  # still something to show


def test_a_memory_table_shorter_than_its_count_keeps_the_regions_present() -> None:
    data = le(3, 4) + le(0, 4) + region_bytes(0, GIB, 0, 0)
    decoded = payloads.decode("mem_table", data)
    assert decoded.fields == {"nregions": 3, "padding": 0, "regions": [region(0, GIB, 0, 0)]}
    # what it should have been, for the size check
    assert payloads.expected_size("mem_table", decoded.fields, DEFAULT_CONTEXT) == 8 + 3 * 32


# --------------------------------------------------------------------------
# Property tests: fields -> bytes -> fields, and bytes -> fields -> bytes
# --------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
i64 = st.integers(-(1 << 63), (1 << 63) - 1)
above_nofd = u64.map(lambda v: v & ~0x1FF)  # bits above index (0-7) and NOFD (8)


def _region_fields(xen: bool) -> st.SearchStrategy[dict[str, int]]:
    base = {
        "guest_phys_addr": u64,
        "memory_size": u64,
        "userspace_addr": u64,
        "mmap_offset": u64,
    }
    if xen:
        base.update(xen_mmap_flags=u32, domid=u32)
    return st.fixed_dictionaries(base)


@st.composite
def _vring_base(draw: st.DrawFn, packed: bool) -> dict[str, int]:
    index = draw(u32)
    if packed:
        parts = {
            "last_avail_idx": draw(st.integers(0, 0x7FFF)),
            "avail_wrap": draw(st.integers(0, 1)),
            "used_idx": draw(st.integers(0, 0x7FFF)),
            "used_wrap": draw(st.integers(0, 1)),
        }
        num = (
            parts["last_avail_idx"]
            | parts["avail_wrap"] << 15
            | parts["used_idx"] << 16
            | parts["used_wrap"] << 31
        )
    else:
        parts = {"next_avail": draw(u16), "reserved": draw(u16)}
        num = parts["next_avail"] | parts["reserved"] << 16
    return {"index": index, "num": num, **parts}


@st.composite
def _mem_table(draw: st.DrawFn, xen: bool) -> dict[str, Any]:
    regions = draw(st.lists(_region_fields(xen), max_size=8))
    return {"nregions": len(regions), "padding": draw(u32), "regions": regions}


@st.composite
def _config(draw: st.DrawFn) -> dict[str, Any]:
    region_data = draw(st.binary(max_size=256))
    return {
        "offset": draw(u32),
        "size": len(region_data),
        "flags": draw(u32),
        "region": region_data,
    }


_SYM_FIELDS = {
    "cipher_alg": u32,
    "key_len": u32,
    "hash_alg": u32,
    "hash_result_len": u32,
    "auth_key_len": u32,
    "add_len": u32,
    "op_type": u8,
    "direction": u8,
    "hash_mode": u8,
    "alg_chain_order": u8,
    "cipher_key_ptr": u64,
    "auth_key_ptr": u64,
    "key": st.binary(min_size=64, max_size=64),
    "auth_key": st.binary(min_size=512, max_size=512),
}
CRYPTO_FIELDS = st.one_of(
    st.fixed_dictionaries(
        {
            "layout": st.just("qemu"),
            "op_code": u64.filter(lambda v: v != 1),
            "session_id": i64,
            **_SYM_FIELDS,
            "info_padding": st.binary(min_size=4, max_size=4),
            "union_tail": st.binary(min_size=432, max_size=432),
        }
    ),
    st.fixed_dictionaries(
        {
            "layout": st.just("qemu"),
            "op_code": st.just(1),
            "session_id": i64,
            "algo": u32,
            "keytype": u32,
            "keylen": u32,
            "info_padding": st.binary(min_size=4, max_size=4),
            "key_ptr": u64,
            "param0": u32,
            "param1": u32,
            "key": st.binary(min_size=1024, max_size=1024),
            "union_tail": st.just(b""),
        }
    ),
    st.fixed_dictionaries(
        {"layout": st.just("qemu-old"), "session_id": i64, "op_code": u32, **_SYM_FIELDS}
    ),
    st.fixed_dictionaries(
        {
            "layout": st.just("unknown"),
            "raw": st.binary(max_size=1200).filter(lambda b: len(b) not in (632, 1072)),
        }
    ),
)

FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "empty": st.just({}),
    "u64": st.fixed_dictionaries({"value": u64}),
    "ack": st.fixed_dictionaries({"value": u64}),
    "log_reply": st.one_of(st.just({}), st.fixed_dictionaries({"value": u64})),
    "virtio_features": st.fixed_dictionaries({"features": u64}),
    "protocol_features": st.fixed_dictionaries({"features": u64}),
    "status": st.fixed_dictionaries({"status": u64}),
    "vring_fd": st.fixed_dictionaries({"index": u8, "nofd": st.booleans(), "reserved": above_nofd}),
    "rarp_mac": st.fixed_dictionaries(
        {
            "mac": st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b)),
            "padding": st.binary(min_size=2, max_size=2),
        }
    ),
    "device_state_result": st.fixed_dictionaries(
        {"error": u8, "nofd": st.booleans(), "reserved": above_nofd}
    ),
    "vring_state": st.fixed_dictionaries({"index": u32, "num": u32}),
    "vring_index": st.fixed_dictionaries({"index": u32, "num": u32}),
    "vring_enable": st.fixed_dictionaries({"index": u32, "num": u32}),
    "vring_endian": st.fixed_dictionaries({"index": u32, "num": u32}),
    "vring_addr": st.fixed_dictionaries(
        {
            "index": u32,
            "flags": u32,
            "desc_user_addr": u64,
            "used_user_addr": u64,
            "avail_user_addr": u64,
            "log_guest_addr": u64,
        }
    ),
    "log": st.fixed_dictionaries({"mmap_size": u64, "mmap_offset": u64}),
    "iotlb": st.fixed_dictionaries(
        {
            "iova": u64,
            "size": u64,
            "uaddr": u64,
            "perm": u8,
            "type": u8,
            "padding": st.binary(min_size=6, max_size=6),
        }
    ),
    "config": _config(),
    "vring_area": st.fixed_dictionaries(
        {"index": u8, "nofd": st.booleans(), "reserved": above_nofd, "size": u64, "offset": u64}
    ),
    "inflight": st.fixed_dictionaries(
        {"mmap_size": u64, "mmap_offset": u64, "num_queues": u16, "queue_size": u16, "padding": u32}
    ),
    "shared_uuid": st.fixed_dictionaries({"uuid": st.uuids().map(str)}),
    "device_state": st.fixed_dictionaries({"direction": u32, "phase": u32}),
    "shmem_map": st.fixed_dictionaries(
        {
            "shmid": u8,
            "padding": st.binary(min_size=7, max_size=7),
            "fd_offset": u64,
            "shm_offset": u64,
            "len": u64,
            "flags": u64,
        }
    ),
    "shmem_config": st.fixed_dictionaries(
        {
            "nregions": u32,
            "padding": u32,
            "memory_sizes": st.lists(u64, max_size=8).map(lambda s: s + [0] * (256 - len(s))),
        }
    ),
    "crypto_session": CRYPTO_FIELDS,
}
"""Fields of every layout that does not depend on the context."""

CONTEXT_FIELDS: list[tuple[str, PayloadContext, st.SearchStrategy[dict[str, Any]]]] = [
    ("vring_base", DEFAULT_CONTEXT, _vring_base(packed=False)),
    ("vring_base", PACKED, _vring_base(packed=True)),
    ("mem_table", DEFAULT_CONTEXT, _mem_table(xen=False)),
    ("mem_table", XEN, _mem_table(xen=True)),
    (
        "mem_region",
        DEFAULT_CONTEXT,
        st.builds(lambda pad, r: {"padding": pad, **r}, u64, _region_fields(False)),
    ),
    ("mem_region", XEN, st.builds(lambda pad, r: {"padding": pad, **r}, u64, _region_fields(True))),
]
ROUND_TRIPS = [(name, DEFAULT_CONTEXT, strategy) for name, strategy in FIELDS.items()]
ROUND_TRIPS += CONTEXT_FIELDS


def test_every_layout_has_a_field_strategy() -> None:
    assert {name for name, _, _ in ROUND_TRIPS} == set(payloads.LAYOUTS)


@pytest.mark.parametrize(
    ("layout", "ctx", "strategy"),
    [
        pytest.param(
            *rt, id=f"{rt[0]}-{'packed' if rt[1].packed else 'xen' if rt[1].xen_mmap else 'plain'}"
        )
        for rt in ROUND_TRIPS
    ],
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_fields_encode_then_decode_to_the_same_fields(
    layout: str,
    ctx: PayloadContext,
    strategy: st.SearchStrategy[dict[str, Any]],
    data: st.DataObject,
) -> None:
    fields = data.draw(strategy)
    encoded = payloads.encode(layout, fields, ctx)
    expected = payloads.expected_size(layout, fields, ctx)
    if expected is not None:
        assert len(encoded) == expected
    decoded = payloads.decode(layout, encoded, ctx)
    assert decoded.error is None
    assert decoded.fields == fields


# bytes -> fields -> bytes: random bytes of the size a layout takes


@st.composite
def _sized_bytes(draw: st.DrawFn, layout: str, ctx: PayloadContext) -> bytes:
    codec = payloads.LAYOUTS[layout]
    if codec.size is not None:
        return draw(st.binary(min_size=codec.size, max_size=codec.size))
    step = payloads.region_size(ctx)
    if layout == "mem_table":
        count = draw(st.integers(0, 8))
        return le(count, 4) + draw(st.binary(min_size=4 + step * count, max_size=4 + step * count))
    if layout == "mem_region":
        return draw(st.binary(min_size=8 + step, max_size=8 + step))
    if layout == "config":
        return draw(st.binary(min_size=12, max_size=12 + 256))
    if layout == "log_reply":
        return draw(st.sampled_from([0, 8]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
    assert layout == "crypto_session"
    size = draw(st.sampled_from([1072, 632, 0, 100, 1071]))
    body = draw(st.binary(min_size=size, max_size=size))
    if size == 1072 and draw(st.booleans()):
        body = le(1, 8) + body[8:]  # the asymmetric member of the union
    return body


BYTE_TRIPS = [(name, DEFAULT_CONTEXT) for name in payloads.LAYOUTS] + [
    ("vring_base", PACKED),
    ("mem_table", XEN),
    ("mem_region", XEN),
]


@pytest.mark.parametrize(
    ("layout", "ctx"),
    [
        pytest.param(
            name, ctx, id=f"{name}-{'packed' if ctx.packed else 'xen' if ctx.xen_mmap else 'plain'}"
        )
        for name, ctx in BYTE_TRIPS
    ],
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_bytes_of_the_layout_size_decode_then_encode_byte_exactly(
    layout: str, ctx: PayloadContext, data: st.DataObject
) -> None:
    raw = data.draw(_sized_bytes(layout, ctx))
    decoded = payloads.decode(layout, raw, ctx)
    assert decoded.error is None
    assert payloads.encode(layout, decoded.fields, ctx) == raw


@settings(max_examples=300, deadline=None)
@given(
    layout=st.sampled_from(sorted(payloads.LAYOUTS)),
    raw=st.binary(max_size=2100),
    ctx=st.sampled_from([DEFAULT_CONTEXT, PACKED, XEN]),
)
def test_decode_never_raises_and_always_has_something_to_show(
    layout: str, raw: bytes, ctx: PayloadContext
) -> None:
    decoded = payloads.decode(layout, raw, ctx)
    assert (decoded.fields is None) == (decoded.error is not None)
    assert isinstance(decoded.summary(ctx), str)
    assert all(isinstance(line, str) for line in decoded.details(ctx))


def test_uuid_text_is_standard() -> None:
    fields = payloads.decode("shared_uuid", uuid.UUID(int=1).bytes).fields
    assert fields == {"uuid": "00000000-0000-0000-0000-000000000001"}
