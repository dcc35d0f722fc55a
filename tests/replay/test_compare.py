"""Field-by-field comparison of a live message with a recorded one, and the closest one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.replay.builders import ack, analysed, be, conversation, fe, meta, records
from vhtrace.analysis import AnalysedMessage, Analyser
from vhtrace.protocol import device_config
from vhtrace.protocol.spec import DeviceType
from vhtrace.replay.compare import MessageView, closest, compare, counted, view
from vhtrace.replay.rules import FeatureMask, Rules, build_rules

NONE = Rules()


def views(msgs: list) -> list[MessageView]:
    return [
        view(i.wire, i.analysis, i.record.fds)
        for i in analysed(msgs)
        if isinstance(i, AnalysedMessage)
    ]


def reply_views(features_recorded: int, features_live: int) -> tuple[MessageView, MessageView]:
    recorded = views([fe("GET_FEATURES"), be("GET_FEATURES", {"features": features_recorded})])
    live = views([fe("GET_FEATURES"), be("GET_FEATURES", {"features": features_live})])
    return recorded[1], live[1]


def test_identical_messages_have_no_difference() -> None:
    for v in views(conversation()):
        assert compare(v, v, NONE) == []


def test_feature_bits_are_named() -> None:
    recorded, live = reply_views(0x175007E46, 0x175007E66)
    recorded, live = MessageView(**_with_device(recorded)), MessageView(**_with_device(live))
    [diff] = compare(recorded, live, NONE)
    assert diff.field == "features"
    assert (diff.recorded, diff.live) == ("0x175007e46", "0x175007e66")
    assert diff.note == "live sets RO (bit 5), which the recording has not"


def _with_device(v: MessageView) -> dict:
    fields = {name: getattr(v, name) for name in MessageView.__slots__}
    fields["context"] = v.context._replace(device=DeviceType.BLK)
    return fields


def test_lost_and_gained_bits() -> None:
    recorded, live = reply_views(0b0110, 0b1010)
    [diff] = compare(recorded, live, NONE)
    assert "live sets bit3 (bit 3)" in diff.note and "live lacks bit2 (bit 2)" in diff.note


def test_masked_bits_do_not_count() -> None:
    recorded, live = reply_views(0x175007E46, 0x175007E66)
    assert compare(recorded, live, build_rules(masks=["5"])) == []
    assert counted(compare(recorded, live, build_rules(masks=["6"])))


def test_nested_region_path_and_ignore_reason() -> None:
    region = {
        "guest_phys_addr": 0,
        "memory_size": 4096,
        "userspace_addr": 1 << 40,
        "mmap_offset": 0,
    }
    table = {"nregions": 2, "regions": [region, region]}
    moved = {"nregions": 2, "regions": [region, {**region, "userspace_addr": 2 << 40}]}
    fds = (meta("memfd"), meta("memfd"))
    [recorded] = views([fe("SET_MEM_TABLE", table, fds=fds)])
    [live] = views([fe("SET_MEM_TABLE", moved, fds=fds)])
    [diff] = compare(recorded, live, build_rules())
    assert diff.field == "regions[1].userspace_addr"
    assert diff.ignored and "ASLR" in diff.ignored
    [diff] = compare(recorded, live, NONE)
    assert diff.ignored is None


def test_config_bytes_say_where_they_differ() -> None:
    asked = {"offset": 0, "size": 8, "flags": 0, "region": bytes(8)}
    recorded = views([fe("GET_CONFIG", asked), be("GET_CONFIG", {**asked, "region": bytes(8)})])
    changed = {**asked, "region": bytes(3) + b"\x07" + bytes(4)}
    live = views([fe("GET_CONFIG", asked), be("GET_CONFIG", changed)])
    [diff] = compare(recorded[1], live[1], NONE)
    assert diff.field == "region"
    assert diff.note == "first difference at byte 3: recorded 0x00, live 0x07"


def test_config_differences_name_the_device_fields() -> None:
    asked = {"offset": 0, "size": 60, "flags": 0, "region": bytes(60)}

    def blk_views(capacity: int) -> list[MessageView]:
        region = device_config.encode(DeviceType.BLK, {"capacity": capacity}, size=60)
        msgs = [fe("GET_CONFIG", asked), be("GET_CONFIG", {**asked, "region": region})]
        items = Analyser(DeviceType.BLK).run(records(msgs))
        return [view(i.wire, i.analysis, i.record.fds) for i in items if type(i) is AnalysedMessage]

    recorded, live = blk_views(0x20000)[1], blk_views(0x40000)[1]
    [diff] = compare(recorded, live, NONE)  # the named fields are not a second difference
    assert diff.field == "region"
    assert diff.note == (
        "first difference at byte 2: recorded 0x02, live 0x04 (capacity 0x20000 -> 0x40000)"
    )
    [diff] = compare(recorded, live, build_rules(["GET_CONFIG.region"], defaults=False))
    assert diff.ignored == "--ignore GET_CONFIG.region"


def test_fd_kinds_flags_and_request() -> None:
    [recorded] = views([fe("SET_VRING_KICK", {"index": 0}, fds=(meta("eventfd"),))])
    [no_fd] = views([fe("SET_VRING_KICK", {"index": 0})])
    fields = {d.field for d in compare(recorded, no_fd, NONE)}
    assert fields == {"fds"}
    [need_reply] = views(
        [fe("SET_VRING_KICK", {"index": 0}, need_reply=True, fds=(meta("eventfd"),))]
    )
    [diff] = compare(recorded, need_reply, NONE)
    assert diff.field == "flags" and "NEED_REPLY" in diff.note
    [other] = views([fe("SET_VRING_CALL", {"index": 0}, fds=(meta("eventfd"),))])
    [diff] = compare(recorded, other, NONE)
    assert (diff.field, diff.recorded, diff.live) == ("request", "SET_VRING_KICK", "SET_VRING_CALL")


def test_closest_prefers_identical_then_nearest() -> None:
    recorded = views(conversation())
    live = views(conversation())
    numbered = list(enumerate(recorded, 1))
    enable_off = live[22]  # SET_VRING_ENABLE num=0
    found = closest(enable_off, numbered, NONE, near=1)
    assert found is not None and found.seq == 23 and found.differences == ()
    assert "identical" in found.describe()
    # without the identical one, the enable (num=1) one, differing in num
    found = closest(enable_off, [c for c in numbered if c[0] != 23], NONE)
    assert found is not None and found.seq == 19
    assert [d.field for d in found.differences] == ["num"]


def test_no_alternative_without_that_request() -> None:
    [status] = views([fe("SET_STATUS", {"status": 1})])
    assert closest(status, list(enumerate(views(conversation()), 1)), NONE) is None


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_feature_words_differ_exactly_in_their_bits(a: int, b: int) -> None:
    recorded, live = reply_views(a, b)
    diffs = compare(recorded, live, NONE)
    assert bool(diffs) == (a != b)
    for bit in range(64):
        named = f"(bit {bit})"
        differs = (a ^ b) >> bit & 1
        assert (named in (diffs[0].note if diffs else "")) == bool(differs)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_a_mask_hides_exactly_its_bits(a: int, mask: int) -> None:
    b = a ^ mask
    recorded, live = reply_views(a, b)
    assert compare(recorded, live, Rules(mask=FeatureMask(virtio=mask))) == []


def test_acks_compare_by_value() -> None:
    recorded = views([fe("SET_OWNER", need_reply=True), ack("SET_OWNER", 0)])
    live = views([fe("SET_OWNER", need_reply=True), ack("SET_OWNER", 1)])
    [diff] = compare(recorded[1], live[1], NONE)
    assert (diff.field, diff.recorded, diff.live) == ("value", "0", "1")
