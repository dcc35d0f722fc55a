"""Answers for live requests the trace does not have (``--unknown ack``).

When replay plays the back-end and the live front-end asks something the recording
never saw, the ``ack`` policy answers it so the front-end carries on. Whether a reply
is owed at all, and in which layout, is the protocol model's verdict (the live
conversation's pending reply); this module only chooses a plausible payload:

* an acknowledgement (REPLY_ACK) is a u64 0, success;
* otherwise the latest recorded reply to the same request, when its size suits;
* the postcopy memory-table reply echoes the request (same regions, as QEMU requires);
* otherwise zeros of the reply layout's size, or the request echoed for layouts whose
  size follows the request (GET_CONFIG: the config space it asked for, zeroed).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vhtrace.protocol import payloads
from vhtrace.protocol.conversation import Pending
from vhtrace.protocol.spec import PAGE_SIZE, Fds


@dataclass(frozen=True, slots=True)
class Answer:
    payload: bytes
    fds: tuple[dict[str, Any], ...]
    """Metadata of fds to re-create and pass (by kind)."""
    how: str
    """What was sent, in words, for the report."""
    pass_fds: tuple[int, ...] = ()
    """Real fds to pass as they are (a forwarded reply's); closed once sent."""


@dataclass(frozen=True, slots=True)
class RecordedReply:
    """A reply in the recording, as a candidate answer."""

    seq: int
    payload: bytes
    fds: tuple[dict[str, Any], ...]


def answer(pending: Pending, request_payload: bytes, recorded: Sequence[RecordedReply]) -> Answer:
    """A success reply to a live request the trace does not have."""
    if pending.kind == "ack":
        return Answer(payloads.encode("ack", {"value": 0}), (), "acknowledged (u64 0)")
    if pending.kind == "postcopy":
        return Answer(request_payload, (), "postcopy reply echoing the request's regions")
    layout = payloads.LAYOUTS[pending.layout]
    fixed = layout.size
    for reply in reversed(recorded):
        size_fits = (
            len(reply.payload) == fixed
            if fixed is not None
            else (len(reply.payload) == len(request_payload))
        )
        if size_fits:
            return Answer(reply.payload, reply.fds, f"answered as recorded #{reply.seq}")
    fds: tuple[dict[str, Any], ...] = ()
    if pending.fds is Fds.ONE:
        kind = pending.row.reply_fd_kind or "memfd"
        fds = ({"kind": kind, "size": PAGE_SIZE},) if kind == "memfd" else ({"kind": kind},)
    if fixed is not None:
        data = bytes(fixed)
        if pending.layout == "inflight":
            decoded = payloads.decode("inflight", request_payload).fields or {}
            data = payloads.encode(
                "inflight", {**decoded, "mmap_size": PAGE_SIZE, "mmap_offset": 0}
            )
        return Answer(data, fds, f"answered with a zeroed {pending.layout}")
    if pending.layout == "config":
        fields = payloads.decode("config", request_payload).fields
        if fields is not None:
            fields = {**fields, "region": bytes(fields["size"])}
            return Answer(payloads.encode("config", fields), fds, "answered with zeroed config")
    return Answer(request_payload, fds, f"answered by echoing the request ({pending.layout})")
