"""Every request row: built by name, analysed as a request and as its reply.

The expectations about the table come from the protocol reference (sections
4, 5 and 8), written out here, so that a wrong row in ``spec.py`` fails.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from mockbackend import handlers
from vhtrace import stats
from vhtrace.memory import recording
from vhtrace.protocol import checks, conversation, payloads, spec
from vhtrace.protocol.conversation import Role
from vhtrace.protocol.messages import build, resolve
from vhtrace.protocol.spec import Channel, Fds, ProtocolFeature, Reply
from vhtrace.replay import rules

GIB = 1 << 30
UUID = "12345678-9abc-def0-0112-233445566778"
REGION = {
    "guest_phys_addr": 4 * GIB,
    "memory_size": GIB,
    "userspace_addr": 0x7F0080000000,
    "mmap_offset": 0,
}
CRYPTO = {"layout": "qemu", "op_code": 0, "cipher_alg": 3, "key_len": 16, "session_id": 0}

# Request names by id, from the reference (sections 4 and 5).
FRONTEND_NAMES = [
    "GET_FEATURES",
    "SET_FEATURES",
    "SET_OWNER",
    "RESET_OWNER",
    "SET_MEM_TABLE",
    "SET_LOG_BASE",
    "SET_LOG_FD",
    "SET_VRING_NUM",
    "SET_VRING_ADDR",
    "SET_VRING_BASE",
    "GET_VRING_BASE",
    "SET_VRING_KICK",
    "SET_VRING_CALL",
    "SET_VRING_ERR",
    "GET_PROTOCOL_FEATURES",
    "SET_PROTOCOL_FEATURES",
    "GET_QUEUE_NUM",
    "SET_VRING_ENABLE",
    "SEND_RARP",
    "NET_SET_MTU",
    "SET_BACKEND_REQ_FD",
    "IOTLB_MSG",
    "SET_VRING_ENDIAN",
    "GET_CONFIG",
    "SET_CONFIG",
    "CREATE_CRYPTO_SESSION",
    "CLOSE_CRYPTO_SESSION",
    "POSTCOPY_ADVISE",
    "POSTCOPY_LISTEN",
    "POSTCOPY_END",
    "GET_INFLIGHT_FD",
    "SET_INFLIGHT_FD",
    "GPU_SET_SOCKET",
    "RESET_DEVICE",
    "VRING_KICK",
    "GET_MAX_MEM_SLOTS",
    "ADD_MEM_REG",
    "REM_MEM_REG",
    "SET_STATUS",
    "GET_STATUS",
    "GET_SHARED_OBJECT",
    "SET_DEVICE_STATE_FD",
    "CHECK_DEVICE_STATE",
    "GET_SHMEM_CONFIG",
    "GET_VRING_BASE_SKIP_DRAIN",
]
BACKEND_NAMES = [
    "IOTLB_MSG",
    "CONFIG_CHANGE_MSG",
    "VRING_HOST_NOTIFIER_MSG",
    "VRING_CALL",
    "VRING_ERR",
    "SHARED_OBJECT_ADD",
    "SHARED_OBJECT_REMOVE",
    "SHARED_OBJECT_LOOKUP",
    "SHMEM_MAP",
    "SHMEM_UNMAP",
]

# Intrinsic replies and their payload, from the reference's reply column.
INTRINSIC_REPLIES = {
    "GET_FEATURES": "virtio_features",
    "GET_PROTOCOL_FEATURES": "protocol_features",
    "GET_VRING_BASE": "vring_base",
    "GET_VRING_BASE_SKIP_DRAIN": "vring_base",
    "GET_QUEUE_NUM": "u64",
    "IOTLB_MSG": "ack",
    "GET_CONFIG": "config",
    "CREATE_CRYPTO_SESSION": "crypto_session",
    "POSTCOPY_ADVISE": "empty",
    "POSTCOPY_LISTEN": "ack",
    "POSTCOPY_END": "ack",
    "GET_INFLIGHT_FD": "inflight",
    "GET_MAX_MEM_SLOTS": "u64",
    "GET_STATUS": "status",
    "GET_SHARED_OBJECT": "u64",
    "SET_DEVICE_STATE_FD": "device_state_result",
    "CHECK_DEVICE_STATE": "u64",
    "GET_SHMEM_CONFIG": "shmem_config",
}

# (request fields, fds) of a well-formed request, by channel and name.
REQUESTS: dict[tuple[Channel, str], tuple[dict[str, Any], int]] = {
    (Channel.MAIN, "GET_FEATURES"): ({}, 0),
    (Channel.MAIN, "SET_FEATURES"): ({"features": 1 << 30 | 1 << 32 | 1 << 33}, 0),
    (Channel.MAIN, "SET_OWNER"): ({}, 0),
    (Channel.MAIN, "RESET_OWNER"): ({}, 0),
    (Channel.MAIN, "SET_MEM_TABLE"): ({"nregions": 1, "regions": [REGION]}, 1),
    (Channel.MAIN, "SET_LOG_BASE"): ({"mmap_size": 0x8000, "mmap_offset": 0}, 1),
    (Channel.MAIN, "SET_LOG_FD"): ({}, 1),
    (Channel.MAIN, "SET_VRING_NUM"): ({"index": 0, "num": 256}, 0),
    (Channel.MAIN, "SET_VRING_ADDR"): (
        {
            "index": 0,
            "flags": 0,
            "desc_user_addr": 0x1000,
            "used_user_addr": 0x3000,
            "avail_user_addr": 0x2000,
            "log_guest_addr": 0,
        },
        0,
    ),
    (Channel.MAIN, "SET_VRING_BASE"): ({"index": 0, "num": 0}, 0),
    (Channel.MAIN, "GET_VRING_BASE"): ({"index": 0, "num": 0}, 0),
    (Channel.MAIN, "SET_VRING_KICK"): ({"index": 0, "nofd": False}, 1),
    (Channel.MAIN, "SET_VRING_CALL"): ({"index": 0, "nofd": False}, 1),
    (Channel.MAIN, "SET_VRING_ERR"): ({"index": 0, "nofd": False}, 1),
    (Channel.MAIN, "GET_PROTOCOL_FEATURES"): ({}, 0),
    (Channel.MAIN, "SET_PROTOCOL_FEATURES"): ({"features": 0x922B}, 0),
    (Channel.MAIN, "GET_QUEUE_NUM"): ({}, 0),
    (Channel.MAIN, "SET_VRING_ENABLE"): ({"index": 0, "num": 1}, 0),
    (Channel.MAIN, "SEND_RARP"): ({"mac": "52:54:00:12:34:56"}, 0),
    (Channel.MAIN, "NET_SET_MTU"): ({"value": 1500}, 0),
    (Channel.MAIN, "SET_BACKEND_REQ_FD"): ({}, 1),
    (Channel.MAIN, "IOTLB_MSG"): (
        {"iova": 0x1000, "size": 0x1000, "uaddr": 0x7F0000000000, "perm": 3, "type": 2},
        0,
    ),
    (Channel.MAIN, "SET_VRING_ENDIAN"): ({"index": 0, "num": 0}, 0),
    (Channel.MAIN, "GET_CONFIG"): ({"offset": 0, "size": 60, "flags": 0, "region": bytes(60)}, 0),
    (Channel.MAIN, "SET_CONFIG"): ({"offset": 0, "size": 4, "flags": 0, "region": b"\1\0\0\0"}, 0),
    (Channel.MAIN, "CREATE_CRYPTO_SESSION"): (CRYPTO, 0),
    (Channel.MAIN, "CLOSE_CRYPTO_SESSION"): ({"value": 5}, 0),
    (Channel.MAIN, "POSTCOPY_ADVISE"): ({}, 0),
    (Channel.MAIN, "POSTCOPY_LISTEN"): ({}, 0),
    (Channel.MAIN, "POSTCOPY_END"): ({}, 0),
    (Channel.MAIN, "GET_INFLIGHT_FD"): (
        {"mmap_size": 0, "mmap_offset": 0, "num_queues": 1, "queue_size": 256},
        0,
    ),
    (Channel.MAIN, "SET_INFLIGHT_FD"): (
        {"mmap_size": 0x2000, "mmap_offset": 0, "num_queues": 1, "queue_size": 256},
        1,
    ),
    (Channel.MAIN, "GPU_SET_SOCKET"): ({}, 1),
    (Channel.MAIN, "RESET_DEVICE"): ({}, 0),
    (Channel.MAIN, "VRING_KICK"): ({"index": 0, "num": 0}, 0),
    (Channel.MAIN, "GET_MAX_MEM_SLOTS"): ({}, 0),
    (Channel.MAIN, "ADD_MEM_REG"): (REGION, 1),
    (Channel.MAIN, "REM_MEM_REG"): (REGION, 0),
    (Channel.MAIN, "SET_STATUS"): ({"status": 0xF}, 0),
    (Channel.MAIN, "GET_STATUS"): ({}, 0),
    (Channel.MAIN, "GET_SHARED_OBJECT"): ({"uuid": UUID}, 0),
    (Channel.MAIN, "SET_DEVICE_STATE_FD"): ({"direction": 0, "phase": 0}, 1),
    (Channel.MAIN, "CHECK_DEVICE_STATE"): ({}, 0),
    (Channel.MAIN, "GET_SHMEM_CONFIG"): ({}, 0),
    (Channel.MAIN, "GET_VRING_BASE_SKIP_DRAIN"): ({"index": 0, "num": 0}, 0),
    (Channel.BACKEND, "IOTLB_MSG"): (
        {"iova": 0x1000, "size": 0x1000, "uaddr": 0, "perm": 1, "type": 1},
        0,
    ),
    (Channel.BACKEND, "CONFIG_CHANGE_MSG"): ({}, 0),
    (Channel.BACKEND, "VRING_HOST_NOTIFIER_MSG"): ({"index": 0, "size": 0x1000, "offset": 0}, 1),
    (Channel.BACKEND, "VRING_CALL"): ({"index": 0, "num": 0}, 0),
    (Channel.BACKEND, "VRING_ERR"): ({"index": 0, "num": 0}, 0),
    (Channel.BACKEND, "SHARED_OBJECT_ADD"): ({"uuid": UUID}, 0),
    (Channel.BACKEND, "SHARED_OBJECT_REMOVE"): ({"uuid": UUID}, 0),
    (Channel.BACKEND, "SHARED_OBJECT_LOOKUP"): ({"uuid": UUID}, 0),
    (Channel.BACKEND, "SHMEM_MAP"): (
        {"shmid": 0, "fd_offset": 0, "shm_offset": 0, "len": 0x1000, "flags": 1},
        1,
    ),
    (Channel.BACKEND, "SHMEM_UNMAP"): (
        {"shmid": 0, "fd_offset": 0, "shm_offset": 0, "len": 0x1000, "flags": 1},
        0,
    ),
}

# (reply fields, fds) by reply layout.
REPLIES: dict[str, tuple[dict[str, Any], int]] = {
    "ack": ({"value": 0}, 0),
    "u64": ({"value": 1}, 0),
    "virtio_features": ({"features": 1 << 30 | 1 << 32 | 1 << 33}, 0),
    "protocol_features": ({"features": 0x922B}, 0),
    "log_reply": ({"value": 0}, 0),
    "vring_base": ({"index": 0, "num": 42}, 0),
    "config": ({"offset": 0, "size": 60, "flags": 0, "region": b"\x01" * 60}, 0),
    "crypto_session": ({**CRYPTO, "session_id": 7}, 0),
    "empty": ({}, 1),  # POSTCOPY_ADVISE: size 0 and the back-end's userfaultfd
    "inflight": ({"mmap_size": 0x2000, "mmap_offset": 0, "num_queues": 1, "queue_size": 256}, 1),
    "status": ({"status": 0xF}, 0),
    "device_state_result": ({"error": 0, "nofd": True}, 0),
    "shmem_config": ({"nregions": 1, "memory_sizes": [0x200000] + [0] * 255}, 0),
}

ROWS = [*spec.FRONTEND_REQUESTS, *spec.BACKEND_REQUESTS]


def test_the_table_has_every_request_of_the_reference_under_its_id() -> None:
    assert [row.name for row in spec.FRONTEND_REQUESTS] == FRONTEND_NAMES
    assert [row.id for row in spec.FRONTEND_REQUESTS] == list(range(1, 46))
    assert [row.name for row in spec.BACKEND_REQUESTS] == BACKEND_NAMES
    assert [row.id for row in spec.BACKEND_REQUESTS] == list(range(1, 11))


def test_every_layout_the_table_names_has_a_codec() -> None:
    from vhtrace.protocol.payloads import LAYOUTS

    for row in ROWS:
        assert row.payload in LAYOUTS, row.name
        assert row.reply_payload in LAYOUTS, row.name
        assert row.postcopy_payload is None or row.postcopy_payload in LAYOUTS


def test_intrinsic_replies_are_those_of_the_reference() -> None:
    intrinsic = {
        row.name: row.reply_payload for row in spec.FRONTEND_REQUESTS if row.reply is Reply.ALWAYS
    }
    assert intrinsic == INTRINSIC_REPLIES
    log = resolve("SET_LOG_BASE")
    assert log.reply is Reply.IF_LOG_SHMFD and log.fds is Fds.IF_LOG_SHMFD
    assert {row.name for row in ROWS if row.reply is Reply.POSTCOPY} == {
        "SET_MEM_TABLE",
        "ADD_MEM_REG",
    }


def test_protocol_feature_bits_are_numbered_as_in_the_reference() -> None:
    pf = ProtocolFeature
    assert [bit.value for bit in pf] == list(range(24))
    assert (pf.MQ, pf.REPLY_ACK, pf.BACKEND_REQ, pf.PAGEFAULT) == (0, 3, 5, 8)
    assert (pf.CONFIGURE_MEM_SLOTS, pf.XEN_MMAP, pf.DEVICE_STATE) == (15, 17, 19)
    assert (pf.GPA_ADDRESSES, pf.SHMEM, pf.GET_VRING_BASE_SKIP_DRAIN) == (21, 22, 23)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.channel}-{row.id}-{row.name}")
def test_each_request_row_builds_and_is_analysed_as_request_then_reply(negotiated, row) -> None:
    fields, fds = REQUESTS[(row.channel, row.name)]
    if row.name == "REM_MEM_REG":
        negotiated.request("ADD_MEM_REG", REGION, fds=1)
    frame = build(
        row.name,
        fields,
        channel=row.channel,
        need_reply=row.reply is not Reply.ALWAYS or row.sets_need_reply,
    )
    assert frame.request == row.id
    assert frame.size == len(frame.payload)

    request = negotiated.send(frame, spec.requester(row.channel), row.channel, fds)
    assert (request.role, request.name, request.layout) == (Role.REQUEST, row.name, row.payload)
    assert request.findings == [], [str(f) for f in request.findings]
    assert {k: request.fields[k] for k in fields} == fields

    # What the reply carries: its intrinsic payload, or else the u64 of REPLY_ACK
    # (every request here but the intrinsic ones was sent with NEED_REPLY).
    intrinsic = row.reply in (Reply.ALWAYS, Reply.IF_LOG_SHMFD)
    layout = row.reply_payload if intrinsic else "ack"
    reply_fields, reply_fds = REPLIES[layout]
    if row.reply_fds is Fds.NONE:
        reply_fds = 0
    elif row.reply_fds is Fds.ONE:
        reply_fds = 1
    reply = negotiated.reply(
        row.name, reply_fields, layout=layout, fds=reply_fds, channel=row.channel
    )
    assert (reply.role, reply.name, reply.layout) == (Role.REPLY, row.name, layout)
    assert reply.answers == request.seq
    assert reply.findings == [], [str(f) for f in reply.findings]
    assert {k: reply.fields[k] for k in reply_fields} == reply_fields
    assert negotiated.conversation.close() == []


@pytest.mark.parametrize(
    ("name", "layout", "fields", "fds"),
    [
        ("GET_INFLIGHT_FD", "inflight", REPLIES["inflight"][0], 1),
        ("POSTCOPY_ADVISE", "empty", {}, 1),
        ("GET_VRING_BASE", "vring_base", {"index": 0, "num": 42}, 0),
        ("GET_CONFIG", "config", REPLIES["config"][0], 0),
    ],
)
def test_a_reply_is_read_by_its_requests_reply_layout(negotiated, name, layout, fields, fds):
    request_fields, request_fds = REQUESTS[(Channel.MAIN, name)]
    negotiated.request(name, request_fields, fds=request_fds)
    # the bytes are built with the reply layout; the analysis must find it on its own
    frame = build(name, fields, reply=True, layout=layout)
    reply = negotiated.send(frame, spec.Side.BACKEND, fds=fds)
    assert reply.layout == layout
    assert {k: reply.fields[k] for k in fields} == fields
    assert reply.findings == []


def test_get_inflight_fd_reply_without_its_memfd_is_reported(negotiated) -> None:
    negotiated.request("GET_INFLIGHT_FD", REQUESTS[(Channel.MAIN, "GET_INFLIGHT_FD")][0])
    reply = negotiated.reply("GET_INFLIGHT_FD", REPLIES["inflight"][0], layout="inflight", fds=0)
    assert [f.code for f in reply.findings] == ["fd-count"]


def test_postcopy_advise_reply_is_size_0_with_one_fd(negotiated) -> None:
    negotiated.request("POSTCOPY_ADVISE")
    reply = negotiated.reply("POSTCOPY_ADVISE", layout="empty", fds=1)
    assert reply.findings == []
    assert reply.fields == {}
    assert negotiated.state.postcopy == "advised"


@pytest.mark.parametrize(
    ("payload", "fds", "code"),
    [(b"", 0, "fd-count"), (bytes(8), 1, "size")],
    ids=["no userfaultfd", "size 8 instead of 0"],
)
def test_a_malformed_postcopy_advise_reply_is_reported(negotiated, payload, fds, code) -> None:
    from vhtrace.protocol.framing import Frame

    negotiated.request("POSTCOPY_ADVISE")
    reply = negotiated.send(Frame.build(28, spec.REPLY_FLAGS, payload), spec.Side.BACKEND, fds=fds)
    assert code in [f.code for f in reply.findings]


# --------------------------------------------------------------------------
# Old SLAVE_* names
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "channel", "expected"),
    [
        ("SET_SLAVE_REQ_FD", None, (Channel.MAIN, 21)),
        ("VHOST_USER_SET_SLAVE_REQ_FD", None, (Channel.MAIN, 21)),
        ("set_slave_req_fd", None, (Channel.MAIN, 21)),
        ("SLAVE_IOTLB_MSG", None, (Channel.BACKEND, 1)),
        ("SLAVE_CONFIG_CHANGE_MSG", Channel.BACKEND, (Channel.BACKEND, 2)),
        ("VHOST_USER_SLAVE_VRING_HOST_NOTIFIER_MSG", None, (Channel.BACKEND, 3)),
        ("SLAVE_VRING_CALL", Channel.BACKEND, (Channel.BACKEND, 4)),
        ("BACKEND_SHMEM_MAP", None, (Channel.BACKEND, 9)),
        ("IOTLB_MSG", None, (Channel.MAIN, 22)),
        ("IOTLB_MSG", Channel.BACKEND, (Channel.BACKEND, 1)),
    ],
)
def test_old_and_prefixed_names_resolve(name, channel, expected) -> None:
    row = resolve(name, channel)
    assert (row.channel, row.id) == expected
    frame = build(name, REQUESTS[(row.channel, row.name)][0], channel=channel)
    assert frame.request == expected[1]


def test_lookup_request_knows_the_old_names() -> None:
    assert spec.lookup_request("VHOST_USER_SET_SLAVE_REQ_FD") == (Channel.MAIN, 21)
    assert spec.lookup_request("SLAVE_SHARED_OBJECT_ADD") is None  # never had a SLAVE_ name
    assert spec.lookup_request("BACKEND_SHARED_OBJECT_ADD") == (Channel.BACKEND, 6)
    assert spec.lookup_request("NO_SUCH_REQUEST") is None


@pytest.mark.parametrize(
    ("name", "bit"),
    [
        ("SLAVE_REQ", 5),
        ("VHOST_USER_PROTOCOL_F_SLAVE_REQ", 5),
        ("SLAVE_SEND_FD", 10),
        ("MTU", 4),
        ("SHMEM_MAP", 22),
        ("backend_req", 5),
        ("21", 21),
        (23, 23),
    ],
)
def test_protocol_feature_names_and_aliases(name, bit) -> None:
    assert spec.protocol_feature(name) == bit


def test_unknown_names_and_ids_raise_key_error() -> None:
    with pytest.raises(KeyError):
        resolve("SET_NOTHING")
    with pytest.raises(KeyError):
        resolve(46)
    with pytest.raises(KeyError):
        resolve("SET_MEM_TABLE", Channel.BACKEND)


# --------------------------------------------------------------------------
# Postcopy memory tables: reply with the back-end's addresses, then the ack
# --------------------------------------------------------------------------

BACKEND_BASE = 0x7FAA00000000


def _into_postcopy(talk) -> None:
    talk.request("POSTCOPY_ADVISE")
    talk.reply("POSTCOPY_ADVISE", layout="empty", fds=1)
    talk.request("POSTCOPY_LISTEN", need_reply=True)
    assert talk.reply("POSTCOPY_LISTEN", {"value": 0}, layout="ack").findings == []
    assert talk.state.postcopy == "listening"


def test_postcopy_set_mem_table_exchange_ends_with_the_front_ends_ack(make_dialogue) -> None:
    negotiated = make_dialogue()
    pf = ProtocolFeature
    negotiated.negotiate(protocol=1 << pf.REPLY_ACK | 1 << pf.PAGEFAULT | 1 << pf.BACKEND_REQ)
    _into_postcopy(negotiated)
    regions = [
        {
            "guest_phys_addr": 0,
            "memory_size": 2 * GIB,
            "userspace_addr": 0x7F0000000000,
            "mmap_offset": 0,
        },
        {
            "guest_phys_addr": 4 * GIB,
            "memory_size": GIB,
            "userspace_addr": 0x7F0080000000,
            "mmap_offset": 2 * GIB,
        },
    ]
    table = negotiated.request("SET_MEM_TABLE", {"nregions": 2, "regions": regions}, fds=2)
    assert table.findings == []
    theirs = [{**r, "userspace_addr": BACKEND_BASE + i * 4 * GIB} for i, r in enumerate(regions)]
    reply = negotiated.reply(
        "SET_MEM_TABLE", {"nregions": 2, "regions": theirs}, layout="mem_table"
    )
    assert (reply.role, reply.layout, reply.answers) == (Role.REPLY, "mem_table", table.seq)
    assert reply.findings == []
    assert [r.backend_addr for r in negotiated.state.regions] == [
        BACKEND_BASE,
        BACKEND_BASE + 4 * GIB,
    ]
    # the front-end's "empty SET_MEM_TABLE": request id 5, a u64 0
    ack = negotiated.send(build("SET_MEM_TABLE", {"value": 0}, layout="ack"))
    assert (ack.role, ack.name, ack.answers) == (Role.POSTCOPY_ACK, "SET_MEM_TABLE", reply.seq)
    assert ack.findings == []
    assert negotiated.conversation.close() == []


def test_postcopy_add_mem_reg_exchange_is_recognised(negotiated) -> None:
    _into_postcopy(negotiated)
    added = negotiated.request("ADD_MEM_REG", REGION, fds=1)
    # the newest spec forbids postcopy with CONFIGURE_MEM_SLOTS: said, but still followed
    assert [f.code for f in added.findings] == ["postcopy-mem-slots"]
    reply = negotiated.reply(
        "ADD_MEM_REG", {**REGION, "userspace_addr": BACKEND_BASE}, layout="mem_region"
    )
    assert (reply.role, reply.layout, reply.findings) == (Role.REPLY, "mem_region", [])
    ack = negotiated.send(build("ADD_MEM_REG", {"value": 0}, layout="ack"))
    assert ack.role is Role.POSTCOPY_ACK
    assert ack.answers == reply.seq
    assert negotiated.state.regions[0].backend_addr == BACKEND_BASE
    assert negotiated.conversation.close() == []


def test_postcopy_reply_with_a_region_not_asked_for_is_reported(negotiated) -> None:
    _into_postcopy(negotiated)
    negotiated.request("ADD_MEM_REG", REGION, fds=1)
    reply = negotiated.reply(
        "ADD_MEM_REG", {**REGION, "guest_phys_addr": 0x1000}, layout="mem_region"
    )
    assert "postcopy-region" in [f.code for f in reply.findings]


def test_a_postcopy_reply_never_acked_is_reported_at_close(negotiated) -> None:
    _into_postcopy(negotiated)
    negotiated.request("ADD_MEM_REG", REGION, fds=1)
    negotiated.reply("ADD_MEM_REG", REGION, layout="mem_region")
    assert [f.code for f in negotiated.conversation.close()] == ["postcopy-ack"]


# ----------------------------------------------------------------------------
# The spec table against the ids QEMU defines (tests/fixtures/qemu-vhost-user-ids.txt).
# ----------------------------------------------------------------------------


VENDORED = Path(__file__).parent.parent / "fixtures" / "qemu-vhost-user-ids.txt"


def vendored() -> list[tuple[str, int, str]]:
    rows = []
    for line in VENDORED.read_text().splitlines():
        if line and not line.startswith("#"):
            kind, number, name = line.split()
            rows.append((kind, int(number), name))
    return rows


VENDORED_ROWS = vendored()

CHANNELS = {"main": Channel.MAIN, "backend": Channel.BACKEND}


def test_the_vendored_list_is_whole() -> None:
    kinds = {kind for kind, _, _ in VENDORED_ROWS}
    assert kinds == {"main", "backend", "protocol"}
    assert sum(1 for kind, _, _ in VENDORED_ROWS if kind == "main") == 42  # 1..43 but 35


@pytest.mark.parametrize(("kind", "number", "name"), [r for r in VENDORED_ROWS if r[0] in CHANNELS])
def test_each_request_qemu_defines_has_our_id_and_name(kind: str, number: int, name: str) -> None:
    row = spec.request_spec(CHANNELS[kind], number)
    assert row is not None, f"{kind} request {number} ({name}) is not in our table"
    assert row.name == name, f"{kind} request {number}: QEMU {name}, ours {row.name}"


@pytest.mark.parametrize(
    ("number", "name"), [(n, m) for k, n, m in VENDORED_ROWS if k == "protocol"]
)
def test_each_protocol_bit_qemu_defines_has_our_number(number: int, name: str) -> None:
    assert ProtocolFeature(number).name == name


def test_our_extra_ids_are_the_ones_the_spec_adds_beyond_qemus_enums() -> None:
    known = {(CHANNELS[k], n) for k, n, _ in VENDORED_ROWS if k in CHANNELS}
    ours = {(channel, number) for channel, rows in spec.REQUESTS.items() for number in rows}
    extra = {(channel.value, number) for channel, number in ours - known}
    main, backend = Channel.MAIN.value, Channel.BACKEND.value
    assert extra == {(main, 35), (main, 44), (main, 45)} | {(backend, n) for n in (4, 5, 9, 10)}


# ----------------------------------------------------------------------------
# Every table keyed by a request name or a layout names one the spec has.
# ----------------------------------------------------------------------------


def _names(channel: Channel) -> set[str]:
    return {row.name for row in spec.REQUESTS[channel].values()}


def _unknown(keys: Iterable[str], channel: Channel = Channel.MAIN) -> list[str]:
    return sorted(set(keys) - _names(channel))


@pytest.mark.parametrize(
    ("table", "channel"),
    [
        ("checks.REQUEST_CHECKS[main]", Channel.MAIN),
        ("checks.REQUEST_CHECKS[backend]", Channel.BACKEND),
    ],
)
def test_request_checks_name_requests_of_their_channel(table: str, channel: Channel) -> None:
    assert _unknown(checks.REQUEST_CHECKS[channel], channel) == [], table


def test_reply_checks_name_layouts() -> None:
    assert sorted(set(checks.REPLY_CHECKS) - set(payloads.LAYOUTS)) == []


def test_conversation_state_changes_name_front_end_requests() -> None:
    assert _unknown(conversation._REQUEST_EFFECTS) == []
    assert _unknown(conversation._REPLY_EFFECTS) == []
    assert _unknown(conversation._RING_STOPS) == []
    assert set(conversation._REPLY_EFFECTS) >= conversation._RING_STOPS


def test_mock_back_end_handlers_name_front_end_requests() -> None:
    assert _unknown(handlers.HANDLERS) == []


def test_stats_timeline_names_front_end_requests() -> None:
    assert _unknown(stats.MILESTONES) == []
    assert _unknown(stats._CONFIG_REQUESTS) == []


def test_replay_ignore_rules_name_requests() -> None:
    every = _names(Channel.MAIN) | _names(Channel.BACKEND)
    named = {request for rule in rules.DEFAULT_RULES for request in rule.requests}
    assert sorted(named - every) == []


def test_snapshot_areas_name_every_area_the_conversation_passes() -> None:
    assert set(recording._AREA_NAMES) == {"inflight", "log"}


def test_a_misspelt_key_is_caught() -> None:
    """The check itself can fail."""
    assert _unknown({"SET_VRING_KIKC", "GET_FEATURES"}) == ["SET_VRING_KIKC"]
