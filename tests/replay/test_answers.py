"""--unknown ack: plausible success replies to requests the trace does not have."""

from __future__ import annotations

from vhtrace.protocol import payloads, spec
from vhtrace.protocol.conversation import Pending
from vhtrace.protocol.spec import Channel, Fds
from vhtrace.replay.answers import RecordedReply, answer


def pending(name: str, kind: str = "intrinsic", layout: str | None = None) -> Pending:
    row = spec.REQUESTS[Channel.MAIN][spec.lookup_request(name)[1]]  # type: ignore[index]
    return Pending(1, row, layout or row.reply_payload, row.reply_fds, kind)


def test_an_ack_is_success() -> None:
    result = answer(pending("SET_VRING_NUM", "ack", "ack"), b"\0" * 8, [])
    assert payloads.decode("ack", result.payload).fields == {"value": 0}
    assert result.fds == ()


def test_the_latest_recorded_reply_of_that_request_is_reused() -> None:
    old = RecordedReply(2, payloads.encode("virtio_features", {"features": 1}), ())
    new = RecordedReply(14, payloads.encode("virtio_features", {"features": 3}), ())
    result = answer(pending("GET_FEATURES"), b"", [old, new])
    assert result.payload == new.payload and result.how == "answered as recorded #14"


def test_a_recorded_reply_of_the_wrong_size_is_not_reused() -> None:
    asked = payloads.encode("config", {"offset": 0, "size": 4, "flags": 0, "region": bytes(4)})
    recorded = RecordedReply(
        18, payloads.encode("config", {"offset": 0, "size": 8, "flags": 0, "region": b"x" * 8}), ()
    )
    result = answer(pending("GET_CONFIG"), asked, [recorded])
    fields = payloads.decode("config", result.payload).fields
    assert fields == {"offset": 0, "size": 4, "flags": 0, "region": bytes(4)}


def test_postcopy_reply_echoes_the_regions() -> None:
    region = payloads.encode(
        "mem_region",
        {"guest_phys_addr": 0x1000, "memory_size": 4096, "userspace_addr": 5, "mmap_offset": 0},
    )
    result = answer(pending("ADD_MEM_REG", "postcopy", "mem_region"), region, [])
    assert result.payload == region


def test_fds_of_the_right_kind_without_a_recording() -> None:
    advise = answer(pending("POSTCOPY_ADVISE"), b"", [])
    assert advise.payload == b"" and [m["kind"] for m in advise.fds] == ["userfaultfd"]
    request = payloads.encode(
        "inflight",
        {"mmap_size": 0, "mmap_offset": 0, "num_queues": 2, "queue_size": 128, "padding": 0},
    )
    inflight = answer(pending("GET_INFLIGHT_FD"), request, [])
    assert [m["kind"] for m in inflight.fds] == ["memfd"]
    fields = payloads.decode("inflight", inflight.payload).fields
    assert fields is not None and fields["num_queues"] == 2 and fields["mmap_size"] == 4096
    assert pending("GET_INFLIGHT_FD").fds is Fds.ONE


def test_fixed_layout_zeros() -> None:
    result = answer(pending("GET_VRING_BASE"), b"\0" * 8, [])
    assert result.payload == bytes(8)
