"""The mutation engine against the shipped qemu-storage-daemon trace: pure, no back-end."""

from __future__ import annotations

import random
import re
import struct
from collections import Counter
from pathlib import Path

import pytest

from vhtrace.fuzz import rings
from vhtrace.fuzz.campaign import load_template
from vhtrace.fuzz.case import Case, Message, build
from vhtrace.fuzz.mutate import (
    FAMILIES,
    field_mutation,
    iteration_rng,
    leaves,
    mutate,
    mutate_size,
)
from vhtrace.protocol import payloads
from vhtrace.protocol.framing import Frame, Framer
from vhtrace.protocol.spec import HEADER_SIZE, MAX_PAYLOAD
from vhtrace.protocol.virtio import DESC_F_NEXT as F_NEXT

TRACE = Path(__file__).resolve().parents[2] / "traces" / "qemu-qsd-blk.vht"


@pytest.fixture(scope="module")
def template():
    return load_template(TRACE, None)


def test_template_is_the_front_end_side_of_the_trace(template) -> None:
    names = [m.name for m in template.case.messages]
    assert names[:3] == ["GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES"]
    assert len(names) == 33  # 33 front-end messages of 44 (README of traces/)
    assert template.queue_num == 1
    assert [r.guest_phys_addr for r in template.regions] == [0, 0xC0000, 0, 0xC0000][:2]
    assert all(m.origin is not None and not m.mutation for m in template.case.messages)


def _frames(raw: bytes) -> list[Frame]:
    framer = Framer()
    framer.feed(raw, [])
    return [e for e in framer.events() if isinstance(e, Frame)]


def test_every_mutated_message_round_trips_through_the_codec(template) -> None:
    """Every message of 400 mutated cases frames back into the same header and payload,
    and a mutated payload that decodes re-encodes to the same bytes."""
    checked = Counter()
    for i in range(400):
        case = mutate(iteration_rng(3, i), template)
        for message in case.messages:
            if len(message.raw) != HEADER_SIZE + message.size:
                checked["cut"] += 1  # hung up inside it: the framer must not see it whole
                assert _frames(message.raw) == []
                continue
            [frame] = _frames(message.raw)
            assert (frame.request, frame.flags, frame.size) == (
                message.request,
                message.flags,
                message.size,
            )
            if frame.oversized:  # past the protocol's payload limit: kept up to it
                assert message.size > MAX_PAYLOAD and message.payload.startswith(frame.payload)
                checked["oversized"] += 1
                continue
            assert frame.payload == message.payload
            if message.layout is None:
                continue
            decoded = payloads.decode(message.layout, message.payload, message.context)
            if decoded.fields is None:
                checked["undecodable"] += 1  # a size mutation: the codec says why, no raise
                continue
            size = payloads.expected_size(message.layout, decoded.fields, message.context)
            if size in (None, len(message.payload)):
                again = payloads.encode(message.layout, decoded.fields, message.context)
                assert again == message.payload, message.describe()
                checked["decoded"] += 1
    assert checked["decoded"] > 5000 and checked["cut"] and checked["undecodable"]
    assert checked["oversized"]


def test_a_field_mutation_reads_back_as_the_value_set(template) -> None:
    message = next(m for m in template.case.messages if m.name == "SET_VRING_NUM")
    mutated = field_mutation(message, "num", 0xFFFF)
    assert mutated is not None
    assert mutated.fields()["num"] == 0xFFFF and mutated.fields()["index"] == 0
    assert mutated.original is message and "num 128 -> 0xffff" in mutated.mutation
    assert field_mutation(message, "num", 1 << 40) is None  # does not fit a u32


def test_every_integer_field_of_every_layout_in_the_trace_can_be_mutated(template) -> None:
    for message in template.case.messages:
        for path, value in leaves(message.fields() or {}):
            if message.layout == "vring_base" and path != "num" and path != "index":
                continue  # readings of num, not fields of their own
            if message.layout == "vring_fd" and path == "nofd":
                continue
            mutated = field_mutation(message, path, value ^ 1) or field_mutation(
                message, path, value ^ 1 << 20
            )
            assert mutated is not None, (message.describe(), path)


def test_same_seed_and_iteration_same_case(template) -> None:
    first = [mutate(iteration_rng(11, i), template) for i in range(50)]
    again = [mutate(iteration_rng(11, i), template) for i in range(50)]
    other = [mutate(iteration_rng(12, i), template) for i in range(50)]
    assert [c.mutations for c in first] == [c.mutations for c in again]
    assert [c.sessions for c in first] == [c.sessions for c in again]
    assert [c.mutations for c in first] != [c.mutations for c in other]


def test_every_family_applies_and_changes_the_case(template) -> None:
    for family in FAMILIES:
        cases = [mutate(iteration_rng(5, i), template, (family,)) for i in range(40)]
        changed = [c for c in cases if c.sessions != template.case.sessions or c.attacks]
        assert len(changed) >= 30, family
        prefixes = {m.split(":")[0] for c in changed for m in c.mutations}
        expected = {"field": {"field", "overlap"}, "fd": {"fds"}, "ring": {"ring 0"}}.get(
            family, {family}
        )
        assert prefixes <= expected, (family, prefixes)


def test_fd_mutations_change_kinds_and_counts(template) -> None:
    seen = Counter()
    for i in range(200):
        case = mutate(iteration_rng(9, i), template, ("fd",))
        for message in case.messages:
            if message.mutation:
                original = message.original
                assert isinstance(original, Message)
                kinds = [f.get("kind") for f in message.fds]
                before = [f.get("kind") for f in original.fds]
                seen["more" if len(kinds) > len(before) else "fewer" if len(kinds) < len(before)
                     else "kind"] += 1  # fmt: skip
    assert seen["more"] and seen["fewer"] and seen["kind"]


def test_reconnect_and_truncate_make_sessions_and_cuts(template) -> None:
    cases = [mutate(iteration_rng(2, i), template, ("sequence",)) for i in range(200)]
    assert any(len(c.sessions) == 2 for c in cases)
    assert any(c.count() < template.case.count() for c in cases)
    assert any(c.count() > template.case.count() for c in cases)
    assert all(isinstance(c, Case) and c.count() > 0 for c in cases)


def test_ring_setups_of_the_trace(template) -> None:
    """The SeaBIOS and the Linux setup of ring 0: size, addresses, kick and enable."""
    assert [(r.index, r.num, r.kick_seq, r.enable_seq) for r in template.rings] == [
        (0, 128, 29, 30),
        (0, 128, 40, 41),
    ]
    first = template.rings[0]
    assert first.avail_uaddr - first.desc_uaddr == 16 * first.num  # avail follows the table


def test_ring_attacks_are_malformed_chains_in_every_way(template) -> None:
    regions = [(r.guest_phys_addr, r.memory_size) for r in template.regions]
    kinds = Counter()
    for i in range(300):
        attack = rings.craft(iteration_rng(4, i), template.rings[0], regions)
        kinds[re.sub(r"0x[0-9a-f]+|\d+", "N", attack.what)] += 1
        for slot, data in attack.desc_writes:
            assert len(data) == 16 and 0 <= slot < 128
        if "to itself" in attack.what:
            [(slot, data)] = attack.desc_writes
            _, _, flags, nxt = struct.unpack("<QIHH", data)
            assert flags & F_NEXT and nxt == slot == attack.head
        if "past the queue size" in attack.what and "avail" in attack.what:
            assert attack.head >= 128
    assert len(kinds) >= 9 and sum(kinds.values()) == 300  # every shape of malformed chain


def test_a_field_that_is_not_there_is_no_mutation() -> None:
    """A SET_MEM_TABLE whose table was emptied by an earlier mutation has no regions.0."""
    empty = payloads.encode("mem_table", {"nregions": 0, "padding": 0, "regions": []})
    message = Message(build(5, 1, empty), layout="mem_table")
    assert field_mutation(message, "regions.0.guest_phys_addr", 0x1000) is None
    assert field_mutation(message, "no_such_field", 1) is None


def test_a_size_mutation_on_a_payload_already_past_the_maximum_does_not_fail(template) -> None:
    """Found by the DPDK campaign: a stacked mutation left a payload past MAX_PAYLOAD, and
    padding it 'to the maximum' asked for a negative count, ending the campaign."""
    big = Message(build(1, 1, bytes(MAX_PAYLOAD + 100)))
    case = Case(((big,),))
    for seed in range(64):
        mutated = mutate_size(random.Random(seed), template, case)
        assert mutated is None or next(mutated.messages).raw != big.raw
