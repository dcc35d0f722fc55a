"""The mutation engine: a recorded case in, a mutated case out, deterministic from a seed.

Four families, each a list of small mutators ``(rng, template, case) -> Case | None``
(None: it does not apply to this case):

* **field**: one field of one payload, decoded and re-encoded by the codec of its layout
  (``vhtrace.protocol.payloads``): boundary values of its width, and values aimed at the
  field's meaning: ring indices past the queue count, ring sizes that are not powers of
  two or too big, sizes and offsets that overflow, regions that overlap or lie past their
  fd, ring addresses outside every region, config windows past the config space;
* **header**: flags (NEED_REPLY, the reply bit, reserved bits, a wrong version), a size
  too small or too large (the payload cut or padded to match, so the peer has every byte
  the header announces), unknown request ids, requests whose feature was not negotiated;
* **sequence**: drop, duplicate, reorder, truncate (hang up after a message, or in the
  middle of one), repeat a one-time request, reconnect mid-setup;
* **fd**: missing, extra, wrong kind (an eventfd where a memfd is due), too many.

A field mutation only stands if the codec reads the mutated value back and re-encodes the
payload to the same bytes (:func:`field_mutation`), so every mutated message is one the
rest of vhtrace decodes as it was meant. Pure: no I/O; ``random.Random`` only.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from vhtrace.fuzz import rings
from vhtrace.fuzz.case import Case, Message, Template, build
from vhtrace.protocol import payloads, spec, virtio
from vhtrace.protocol.framing import unpack_header
from vhtrace.protocol.spec import HEADER_SIZE, Channel

Mutator = Callable[[random.Random, Template, Case], Case | None]

WIDTH_LIMITS = (0xFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
ONE_TIME = ("SET_OWNER", "SET_BACKEND_REQ_FD", "SET_PROTOCOL_FEATURES", "ADD_MEM_REG",
            "SET_MEM_TABLE", "SET_FEATURES", "SET_VRING_KICK", "GET_INFLIGHT_FD")  # fmt: skip
"""Requests a front-end sends once per setup: repeating them is a classic bug trigger."""


# -- locating a message ------------------------------------------------------------


@dataclass(frozen=True)
class Spot:
    session: int
    index: int


def spots(case: Case, where: Callable[[Message], bool] = lambda m: True) -> list[Spot]:
    return [
        Spot(s, i)
        for s, session in enumerate(case.sessions)
        for i, message in enumerate(session)
        if where(message)
    ]


def at(case: Case, spot: Spot) -> Message:
    return case.sessions[spot.session][spot.index]


def put(case: Case, spot: Spot, messages: list[Message], what: str) -> Case:
    """The case with the message at ``spot`` replaced by ``messages`` (none: dropped)."""
    session = list(case.sessions[spot.session])
    session[spot.index : spot.index + 1] = messages
    sessions = list(case.sessions)
    sessions[spot.session] = tuple(session)
    return Case(tuple(s for s in sessions if s), (*case.mutations, what), case.attacks)


# -- field mutations ------------------------------------------------------------------


def leaves(fields: Any, prefix: str = "") -> list[tuple[str, int]]:
    """Every integer field of a decoded payload, by path (``regions.1.memory_size``)."""
    found: list[tuple[str, int]] = []
    if isinstance(fields, dict):
        for key, value in fields.items():
            if key == "device_config":
                continue  # a reading of ``region``, not a field of the wire
            found += leaves(value, f"{prefix}{key}.")
    elif isinstance(fields, list):
        for i, value in enumerate(fields):
            found += leaves(value, f"{prefix}{i}.")
    elif isinstance(fields, int) and not isinstance(fields, bool):
        found.append((prefix.rstrip("."), fields))
    return found


def get_path(fields: Any, path: str) -> Any:
    for part in path.split("."):
        fields = fields[int(part)] if isinstance(fields, list) else fields[part]
    return fields


def set_path(fields: Any, path: str, value: Any) -> Any:
    """A copy of ``fields`` with the value at ``path`` replaced."""
    head, _, rest = path.partition(".")
    if isinstance(fields, list):
        copy = list(fields)
        index = int(head)
        copy[index] = set_path(copy[index], rest, value) if rest else value
        return copy
    copy = dict(fields)
    copy[head] = set_path(copy[head], rest, value) if rest else value
    return copy


def field_mutation(message: Message, path: str, value: int) -> Message | None:
    """``message`` with one field set, if the codec carries the value faithfully.

    The header's size follows the new payload (a field mutation changes content, not
    framing). None when the value does not fit the field or does not read back."""
    fields = message.fields()
    if fields is None or message.layout is None:
        return None
    layout, ctx = message.layout, message.context
    try:
        new_fields = set_path(fields, path, value)
    except (KeyError, IndexError, TypeError, ValueError):
        return None  # no such field in this payload (a table with fewer regions...)
    # derived readings (next_avail of a split vring base) are recomputed from the raw field
    for derived in ("next_avail", "reserved", "last_avail_idx", "used_idx"):
        if layout == "vring_base" and path != derived:
            new_fields.pop(derived, None)
    try:
        payload = payloads.encode(layout, new_fields, ctx)
    except (struct.error, KeyError, TypeError, ValueError, OverflowError):
        return None
    decoded = payloads.decode(layout, payload, ctx)
    if decoded.fields is None:
        return None
    try:
        if get_path(decoded.fields, path) != value:
            return None
    except (KeyError, IndexError):
        return None
    if payloads.encode(layout, decoded.fields, ctx) != payload:
        return None
    request, flags, _ = unpack_header(message.raw)
    old = get_path(fields, path)
    return message.with_raw(
        build(request, flags, payload), f"{path} {_show(old)} -> {_show(value)}"
    )


def _show(value: int) -> str:
    return str(value) if 0 <= value < 4096 else f"0x{value:x}"


def boundary_values(value: int) -> list[int]:
    """Edges of every integer width, and the neighbourhood of the recorded value."""
    out = [0, 1, value + 1, value - 1, value * 2, value ^ 0x80000000, value | 1 << 63]
    for limit in WIDTH_LIMITS:
        out += [limit, limit - 1, (limit + 1) >> 1, ((limit + 1) >> 1) - 1]
    return [v for v in out if 0 <= v <= WIDTH_LIMITS[-1]]


def aimed_values(message: Message, path: str, value: int, template: Template) -> list[int]:
    """Values aimed at what the field means."""
    leaf = path.rsplit(".", 1)[-1]
    queues = template.queue_num
    out: list[int] = []
    if leaf == "index":
        out += [queues, queues + 1, spec.VRING_IDX_MASK, spec.MAX_VRINGS - 1, spec.MAX_VRINGS]
    elif leaf == "num" and message.name == "SET_VRING_NUM":
        out += [0, 3, 255, virtio.MAX_QUEUE_SIZE, virtio.MAX_QUEUE_SIZE + 1, 0xFFFF, 0x10000]
    elif leaf == "num" and message.name in ("SET_VRING_BASE", "SET_VRING_ENABLE"):
        out += [2, 0xFFFF, 0x8000, 0x10000, 0x80008000]
    elif leaf in ("desc_user_addr", "avail_user_addr", "used_user_addr", "log_guest_addr"):
        out += [0, 1, value + 1, value + 2]
        for r in template.regions:
            end = r.userspace_addr + r.memory_size
            out += [end, end - 1, end - 2, r.userspace_addr - 1, r.userspace_addr]
        if template.regions:
            out.append(max(r.userspace_addr + r.memory_size for r in template.regions) + 0x1000)
    elif leaf in ("memory_size", "mmap_offset", "guest_phys_addr", "userspace_addr"):
        for r in template.regions:
            out += [r.guest_phys_addr, r.memory_size, r.mmap_offset, r.userspace_addr]
            out += [r.memory_size * 2, r.mmap_offset + r.memory_size]
            out += [(1 << 64) - r.memory_size, (1 << 64) - 0x1000]
        out += [0x1000, 1 << 63, (1 << 64) - 1]
    elif leaf == "nregions":
        out += [0, spec.MAX_MEM_REGIONS, spec.MAX_MEM_REGIONS + 1, spec.MAX_RAM_SLOTS + 1]
    elif leaf in ("offset", "size") and message.layout == "config":
        out += [spec.MAX_CONFIG_SIZE, spec.MAX_CONFIG_SIZE + 1, 0x7FFFFFFF, 0xFFFFFFFF]
        out += [value + 1, 0]
    elif leaf in ("features", "value"):
        out += [0, (1 << 64) - 1, value ^ (1 << 30), value ^ (1 << 34), value ^ (1 << 33)]
    elif leaf in ("mmap_size", "num_queues", "queue_size"):
        out += [0, 1 << 63, (1 << 64) - 1, 0xFFFF, 0x10000]
    return [v for v in out if 0 <= v <= WIDTH_LIMITS[-1]]


def mutate_field(rng: random.Random, template: Template, case: Case) -> Case | None:
    candidates = spots(case, lambda m: bool(m.fields() and leaves(m.fields())))
    if not candidates:
        return None
    spot = rng.choice(candidates)
    message = at(case, spot)
    path, value = rng.choice(leaves(message.fields()))
    values = aimed_values(message, path, value, template)
    if not values or rng.random() < 0.3:
        values = boundary_values(value)
    for _ in range(8):
        mutated = field_mutation(message, path, rng.choice(values))
        if mutated is not None:
            return put(case, spot, [mutated], f"field: {mutated.describe()}")
    return None


def mutate_region_overlap(rng: random.Random, template: Template, case: Case) -> Case | None:
    """A memory region placed over another one (same guest-physical or user address)."""
    candidates = spots(case, lambda m: m.name in ("ADD_MEM_REG", "SET_MEM_TABLE"))
    if not candidates or not template.regions:
        return None
    spot = rng.choice(candidates)
    message = at(case, spot)
    other = rng.choice(template.regions)
    prefix = "regions.0." if message.name == "SET_MEM_TABLE" else ""
    key = rng.choice(["guest_phys_addr", "userspace_addr"])
    value = getattr(other, key) + rng.choice([0, 0x1000, other.memory_size - 0x1000])
    mutated = field_mutation(message, prefix + key, max(0, value))
    if mutated is None:
        return None
    return put(case, spot, [mutated], f"overlap: {mutated.describe()}")


# -- header mutations --------------------------------------------------------------------


def mutate_flags(rng: random.Random, template: Template, case: Case) -> Case | None:
    spot = rng.choice(spots(case))
    message = at(case, spot)
    request, flags, _ = unpack_header(message.raw)
    new = rng.choice(
        [
            flags | spec.FLAG_NEED_REPLY,
            flags & ~spec.FLAG_NEED_REPLY,
            flags | spec.FLAG_REPLY,
            flags & ~spec.VERSION_MASK,
            flags & ~spec.VERSION_MASK | 0x2,
            flags | 0x10,
            flags | spec.RESERVED_FLAGS_MASK,
        ]
    )
    if new == flags:
        return None
    mutated = message.with_raw(
        build(request, new, message.payload), f"flags 0x{flags:x} -> 0x{new:x}"
    )
    return put(case, spot, [mutated], f"header: {mutated.describe()}")


def mutate_size(rng: random.Random, template: Template, case: Case) -> Case | None:
    """A payload shorter or longer than its layout, the header saying so."""
    spot = rng.choice(spots(case))
    message = at(case, spot)
    request, flags, _ = unpack_header(message.raw)
    payload = message.payload
    choice = rng.randrange(4)
    if choice == 0 and payload:
        new = payload[: rng.randrange(len(payload))]
    elif choice == 1:
        new = payload + bytes(rng.choice([1, 4, 8, 32]))
    elif choice == 2:
        # to the protocol's maximum and just past it (a stacked mutation may be past it)
        new = payload + bytes(max(0, spec.MAX_PAYLOAD - len(payload)) + rng.choice([0, 1, 8]))
    else:
        new = payload[:4] if len(payload) > 4 else payload + bytes(4)
    if new == payload:
        return None
    mutated = message.with_raw(build(request, flags, new), f"size {len(payload)} -> {len(new)}")
    return put(case, spot, [mutated], f"header: {mutated.describe()}")


def mutate_request_id(rng: random.Random, template: Template, case: Case) -> Case | None:
    """The same bytes under another request id: unknown, or the wrong known one."""
    spot = rng.choice(spots(case))
    message = at(case, spot)
    request, flags, _ = unpack_header(message.raw)
    known = sorted(spec.REQUESTS[Channel.MAIN])
    new = rng.choice([0, max(known) + 1, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.choice(known)])
    if new == request:
        return None
    row = spec.request_spec(Channel.MAIN, new)
    mutated = replace(
        message.with_raw(build(new, flags, message.payload), f"request {request} -> {new}"),
        layout=row.payload if row else None,
    )
    return put(case, spot, [mutated], f"header: {mutated.describe()}")


def mutate_ungated(rng: random.Random, template: Template, case: Case) -> Case | None:
    """Insert a request whose feature the conversation did not negotiate."""
    gated = [
        row
        for row in spec.FRONTEND_REQUESTS
        if row.gate is not None
        and row.gate.protocol is not None
        and not template.negotiated_protocol & (1 << row.gate.protocol)
        and row.opens is None
    ]
    if not gated:
        return None
    row = rng.choice(gated)
    layout = payloads.LAYOUTS[row.payload]
    payload = bytes(layout.size or 0)
    if row.payload == "config":
        payload = payloads.encode("config", {"offset": 0, "size": 8, "flags": 0})
    fds: tuple[dict[str, Any], ...] = ()
    if row.fds is spec.Fds.ONE:
        fds = ({"kind": "memfd", "size": spec.PAGE_SIZE},)
    message = Message(
        build(row.id, spec.VERSION, payload),
        fds,
        row.payload,
        mutation=f"inserted, {row.gate.describe()} not negotiated",
    )
    where = rng.choice(spots(case))
    return put(case, where, [at(case, where), message], f"header: {message.describe()}")


# -- sequence mutations ------------------------------------------------------------------


def mutate_drop(rng: random.Random, template: Template, case: Case) -> Case | None:
    if case.count() <= 1:
        return None
    spot = rng.choice(spots(case))
    return put(case, spot, [], f"sequence: dropped {at(case, spot).describe()}")


def mutate_duplicate(rng: random.Random, template: Template, case: Case) -> Case | None:
    spot = rng.choice(spots(case))
    message = at(case, spot)
    return put(case, spot, [message, message], f"sequence: duplicated {message.describe()}")


def mutate_reorder(rng: random.Random, template: Template, case: Case) -> Case | None:
    candidates = [s for s in spots(case) if s.index + 1 < len(case.sessions[s.session])]
    if not candidates:
        return None
    spot = rng.choice(candidates)
    first, second = at(case, spot), case.sessions[spot.session][spot.index + 1]
    session = list(case.sessions[spot.session])
    session[spot.index : spot.index + 2] = [second, first]
    sessions = list(case.sessions)
    sessions[spot.session] = tuple(session)
    what = f"sequence: swapped {first.describe()} and {second.describe()}"
    return Case(tuple(sessions), (*case.mutations, what), case.attacks)


def mutate_truncate(rng: random.Random, template: Template, case: Case) -> Case | None:
    """Hang up after a message, or in the middle of one (its bytes cut, header kept)."""
    spot = rng.choice(spots(case))
    message = at(case, spot)
    session = list(case.sessions[spot.session][: spot.index + 1])
    what = f"sequence: hung up after {message.describe()}"
    if rng.random() < 0.5 and len(message.raw) > HEADER_SIZE:
        # inside the payload: the header announces bytes that never come
        cut = rng.randrange(HEADER_SIZE, len(message.raw))
        session[-1] = replace(
            message.with_raw(message.raw[:cut], f"cut after {cut} of {len(message.raw)} bytes"),
            fds=message.fds,
        )
        what = f"sequence: hung up inside {session[-1].describe()}"
    sessions = [*list(case.sessions[: spot.session]), tuple(session)]
    return Case(tuple(sessions), (*case.mutations, what), case.attacks)


def mutate_repeat_one_time(rng: random.Random, template: Template, case: Case) -> Case | None:
    """A one-time setup request sent again later in the session."""
    candidates = spots(case, lambda m: m.name in ONE_TIME)
    if not candidates:
        return None
    spot = rng.choice(candidates)
    message = at(case, spot)
    later = [s for s in spots(case) if s.session == spot.session and s.index >= spot.index]
    where = rng.choice(later)
    return put(case, where, [at(case, where), message], f"sequence: repeated {message.describe()}")


def mutate_reconnect(rng: random.Random, template: Template, case: Case) -> Case | None:
    """Hang up mid-setup and connect again to start over."""
    first = case.sessions[0]
    if len(first) < 2:
        return None
    cut = rng.randrange(1, len(first))
    sessions = (first[:cut], *case.sessions)
    what = f"sequence: reconnected after {first[cut - 1].describe()}"
    return Case(sessions, (*case.mutations, what), case.attacks)


# -- fd mutations ---------------------------------------------------------------------------

EVENTFD = {"kind": "eventfd"}
MEMFD = {"kind": "memfd", "size": spec.PAGE_SIZE, "name": "vhtrace-fuzz"}


def mutate_fds(rng: random.Random, template: Template, case: Case) -> Case | None:
    spot = rng.choice(spots(case))
    message = at(case, spot)
    fds = message.fds
    options: list[tuple[tuple[dict[str, Any], ...], str]] = [
        ((*fds, EVENTFD), "an extra eventfd"),
        ((*fds, MEMFD), "an extra memfd"),
        (tuple(EVENTFD for _ in range(spec.MAX_FDS + 1)), f"{spec.MAX_FDS + 1} eventfds"),
    ]
    if fds:
        i = rng.randrange(len(fds))
        kind = fds[i].get("kind")
        wrong = MEMFD if kind == "eventfd" else EVENTFD
        options += [
            (fds[:i] + fds[i + 1 :], f"fd {i} ({kind}) missing"),
            ((*fds[:i], wrong, *fds[i + 1 :]), f"fd {i}: {wrong['kind']} instead of {kind}"),
        ]
    new, what = rng.choice(options)
    mutated = message.with_fds(new, what)
    return put(case, spot, [mutated], f"fds: {mutated.describe()}")


# -- ring mutations ----------------------------------------------------------------------


def mutate_ring(rng: random.Random, template: Template, case: Case) -> Case | None:
    """A malformed descriptor chain on a ring of one of the recorded setups."""
    if not template.rings or case.attacks:
        return None
    setup = rng.choice(template.rings)
    regions = [(r.guest_phys_addr, r.memory_size) for r in template.regions]
    attack = rings.craft(rng, setup, regions)
    return replace(case, mutations=(*case.mutations, attack.what), attacks=(attack,))


FAMILIES: dict[str, tuple[tuple[Mutator, int], ...]] = {
    "field": ((mutate_field, 6), (mutate_region_overlap, 1)),
    "header": ((mutate_flags, 2), (mutate_size, 2), (mutate_request_id, 1), (mutate_ungated, 1)),
    "sequence": (
        (mutate_drop, 2),
        (mutate_duplicate, 1),
        (mutate_reorder, 1),
        (mutate_truncate, 1),
        (mutate_repeat_one_time, 1),
        (mutate_reconnect, 1),
    ),
    "fd": ((mutate_fds, 2),),
    "ring": ((mutate_ring, 1),),
}
"""Each family's mutators with their weights."""
FAMILY_WEIGHTS = {"field": 5, "header": 2, "sequence": 2, "fd": 1, "ring": 2}


def mutate(
    rng: random.Random,
    template: Template,
    families: tuple[str, ...] | None = None,
    table: dict[str, tuple[tuple[Mutator, int], ...]] | None = None,
    family_weights: dict[str, int] | None = None,
) -> Case:
    """The template's case with one to three mutations stacked (from ``table``'s families:
    default the front-end side's, ``FAMILIES``)."""
    table = table or FAMILIES
    family_weights = family_weights or FAMILY_WEIGHTS
    chosen = families or tuple(table)
    weights = [family_weights[f] for f in chosen]
    case = template.case
    wanted = rng.choice([1, 1, 1, 2, 3])
    tries = 0
    while len(case.mutations) < wanted and tries < 20:
        tries += 1
        family = rng.choices(chosen, weights)[0]
        mutators = table[family]
        mutator = rng.choices([m for m, _ in mutators], [w for _, w in mutators])[0]
        mutated = mutator(rng, template, case)
        if mutated is not None and mutated.count():
            case = mutated
    return case


def iteration_rng(seed: int, iteration: int) -> random.Random:
    """The generator of one iteration: iteration N of seed S is the same on every run."""
    return random.Random(seed * 1_000_003 + iteration)
