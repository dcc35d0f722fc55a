"""Build messages by name: the encoding side of the protocol model.

Used by the mock back-end, replay, tests and benchmarks, so that a message is
written as ``build("SET_VRING_NUM", {"index": 0, "num": 256})`` rather than as
struct packing scattered around.
"""

from __future__ import annotations

from typing import Any

from vhtrace.protocol import payloads, spec
from vhtrace.protocol.framing import Frame
from vhtrace.protocol.payloads import DEFAULT_CONTEXT, PayloadContext
from vhtrace.protocol.spec import Channel


def resolve(name: str | int, channel: Channel | None = None) -> spec.RequestSpec:
    """The table row for a request name (or alias) or id; raises KeyError if unknown."""
    if isinstance(name, int):
        row = spec.request_spec(channel or Channel.MAIN, name)
        if row is None:
            raise KeyError(f"unknown request id {name} on the {channel or Channel.MAIN} channel")
        return row
    key = name.strip().upper().removeprefix("VHOST_USER_")
    if channel is Channel.BACKEND:
        key = key.removeprefix("BACKEND_").removeprefix("SLAVE_")
        for row in spec.BACKEND_REQUESTS:
            if key == row.name:
                return row
    found = spec.lookup_request(key)
    if found is None or (channel is not None and found[0] is not channel):
        raise KeyError(f"unknown request {name!r}")
    row = spec.request_spec(*found)
    assert row is not None
    return row


def build(
    name: str | int,
    fields: dict[str, Any] | None = None,
    *,
    channel: Channel | None = None,
    reply: bool = False,
    need_reply: bool = False,
    layout: str | None = None,
    fds: tuple[int, ...] = (),
    ctx: PayloadContext = DEFAULT_CONTEXT,
) -> Frame:
    """A well-formed message: header flags, size and payload filled in.

    ``layout`` overrides the table's choice (the postcopy memory-table reply
    uses the request's layout; replies otherwise use ``reply_payload``)."""
    row = resolve(name, channel)
    if layout is None:
        layout = row.reply_payload if reply else row.payload
    payload = payloads.encode(layout, fields or {}, ctx)
    flags = spec.VERSION
    if reply:
        flags |= spec.FLAG_REPLY
    if need_reply:
        flags |= spec.FLAG_NEED_REPLY
    return Frame(row.id, flags, len(payload), payload, tuple(fds))
