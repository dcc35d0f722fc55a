"""Mutations of the served side (the front-end direction): the back-end's own requests.

A back-end talks to the front-end on the back-end channel (SET_BACKEND_REQ_FD's
socket): CONFIG_CHANGE_MSG makes QEMU read the config space again, VRING_HOST_NOTIFIER_MSG
hands it an fd of a page to map as a ring's doorbell, IOTLB_MSG asks it to translate an
I/O address (a MISS) or says a translation failed. The ``backend`` family inserts one such
request, with aimed fields (ring indices past the queue count, offsets past the fd,
sizes other than a page, every IOTLB type, edge addresses) and NEED_REPLY set or not, at a
point after the channel exists: after one of the recorded front-end's messages (a ring
setup, a GET_CONFIG...), so the served trace sends it there. The ``sequence`` family for
this direction drops or duplicates a reply (a front-end that waits for ever for a reply it
is owed is the hang oracle's). Pure: no I/O.
"""

from __future__ import annotations

import random
from typing import Any

from vhtrace.fuzz.case import Case, Message, Template, build
from vhtrace.fuzz.mutate import (
    FAMILIES,
    WIDTH_LIMITS,
    Mutator,
    mutate_drop,
    mutate_duplicate,
    spots,
)
from vhtrace.protocol import payloads, spec
from vhtrace.protocol.payloads import IOTLB_TYPES
from vhtrace.protocol.spec import Channel

CHANNEL_OPENER = "SET_BACKEND_REQ_FD"
"""The front-end message that hands the back-end its channel: requests go after it."""

EDGES = (0, 1, spec.PAGE_SIZE - 1, spec.PAGE_SIZE, 1 << 32, 1 << 40, WIDTH_LIMITS[-1])


def _request_id(name: str) -> int:
    return next(i for i, row in spec.REQUESTS[Channel.BACKEND].items() if row.name == name)


def _host_notifier(rng: random.Random, template: Template) -> tuple[dict[str, Any], tuple, str]:
    index = rng.choice([0, template.queue_num - 1, template.queue_num, 0xFF, 0x7FFF])
    fields = {
        "index": max(0, index),
        "nofd": rng.random() < 0.15,
        "size": rng.choice([spec.PAGE_SIZE] * 3 + [0, 1, 2 * spec.PAGE_SIZE, WIDTH_LIMITS[-1]]),
        "offset": rng.choice([0] * 3 + [spec.PAGE_SIZE, spec.PAGE_SIZE * 16, 1, *EDGES[4:]]),
    }
    fd_size = rng.choice([spec.PAGE_SIZE] * 3 + [0, 2 * spec.PAGE_SIZE])
    fds: tuple[dict[str, Any], ...] = ()
    if not fields["nofd"]:
        fds = rng.choice(
            [({"kind": "memfd", "size": fd_size, "name": "vhtrace-fuzz-notifier"},)] * 4
            + [(), ({"kind": "eventfd"},)]
        )
    return fields, fds, "VRING_HOST_NOTIFIER_MSG"


def _iotlb(rng: random.Random, template: Template) -> tuple[dict[str, Any], tuple, str]:
    region = rng.choice(template.regions) if template.regions else None
    addresses = list(EDGES)
    if region is not None:
        end = region.guest_phys_addr + region.memory_size
        addresses += [region.guest_phys_addr, end - 1, end, region.userspace_addr]
    fields = {
        "iova": rng.choice(addresses),
        "size": rng.choice([spec.PAGE_SIZE, 0, 1, *EDGES[4:]]),
        "uaddr": rng.choice(addresses),
        "perm": rng.choice([0, 1, 2, 3, 0xFF]),
        "type": rng.choice([*IOTLB_TYPES, 0, 0xFF]),
    }
    return fields, (), "IOTLB_MSG"


def mutate_backend_request(rng: random.Random, template: Template, case: Case) -> Case | None:
    """Insert a back-end-channel request after one of the front-end's messages."""
    opened = [n for n, name in template.requests if name == CHANNEL_OPENER]
    if not opened:
        return None
    later = [n for n, _ in template.requests if n > opened[0]]
    after = rng.choice(later or opened)
    kind = rng.choice(["config", "notifier", "notifier", "iotlb", "iotlb", "unknown"])
    fds: tuple[dict[str, Any], ...] = ()
    if kind == "config":
        name, layout, payload = "CONFIG_CHANGE_MSG", "empty", b""
    elif kind == "unknown":
        name, layout, payload = "", None, bytes(8)
    else:
        fields, fds, name = (_host_notifier if kind == "notifier" else _iotlb)(rng, template)
        layout = "vring_area" if kind == "notifier" else "iotlb"
        payload = payloads.encode(layout, fields)
    request = _request_id(name) if name else rng.choice([0, 4, 0xFF, 0x7FFFFFFF])
    flags = spec.VERSION if rng.random() < 0.5 else spec.VERSION | spec.FLAG_NEED_REPLY
    message = Message(
        build(request, flags, payload), fds, layout, channel=Channel.BACKEND, after=after
    )
    message = Message(
        message.raw, fds, layout, channel=Channel.BACKEND, after=after,
        original=message,
        mutation=f"inserted after #{after}: {payload.hex() or 'empty'}, flags 0x{flags:x}",
    )  # fmt: skip
    where = spots(case)
    sessions = list(case.sessions)
    first = list(sessions[0]) if sessions else []
    position = sum(1 for s in where if _anchor_before(case, s.index, after))
    first.insert(position, message)
    sessions[0] = tuple(first)
    what = f"backend: {message.describe()}"
    return Case(tuple(sessions), (*case.mutations, what), case.attacks)


def _anchor_before(case: Case, index: int, after: int) -> bool:
    """Whether the case's message ``index`` is served before a message inserted after
    front-end message ``after`` (replies to requests up to ``after`` are)."""
    message = case.sessions[0][index]
    if message.after is not None:
        return message.after <= after
    return message.origin is not None and message.origin < after


SERVED_FAMILIES: dict[str, tuple[tuple[Mutator, int], ...]] = {
    "field": FAMILIES["field"],
    "header": FAMILIES["header"],
    "fd": FAMILIES["fd"],
    "sequence": ((mutate_drop, 2), (mutate_duplicate, 1)),
    "backend": ((mutate_backend_request, 1),),
}
"""The front-end direction's families: mutated replies, and the back-end's own requests."""
SERVED_WEIGHTS = {"field": 5, "header": 2, "fd": 1, "sequence": 1, "backend": 3}
