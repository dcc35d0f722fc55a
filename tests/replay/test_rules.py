"""What replay does not compare: default rules, --ignore, --mask-features."""

from __future__ import annotations

import pytest

from vhtrace.protocol.spec import DeviceType, Side
from vhtrace.replay.rules import FeatureMask, RuleError, build_rules, parse_ignore, parse_mask


def test_ignore_field_everywhere() -> None:
    rule = parse_ignore("userspace_addr")
    assert rule.applies("ADD_MEM_REG", "request", Side.FRONTEND, "userspace_addr")
    assert rule.applies("GET_FEATURES", "reply", Side.BACKEND, "userspace_addr")
    assert not rule.applies("ADD_MEM_REG", "request", Side.FRONTEND, "guest_phys_addr")


def test_ignore_field_of_a_request_and_its_subfields() -> None:
    rule = parse_ignore("SET_MEM_TABLE.regions")
    assert rule.applies("SET_MEM_TABLE", "request", Side.FRONTEND, "regions.userspace_addr")
    assert not rule.applies("ADD_MEM_REG", "request", Side.FRONTEND, "regions.userspace_addr")
    assert not rule.applies("SET_MEM_TABLE", "request", Side.FRONTEND, "regionsx")


def test_ignore_with_a_glob_and_an_old_name() -> None:
    assert parse_ignore("SET_VRING_*.flags").applies(
        "SET_VRING_ADDR", "request", Side.FRONTEND, "flags"
    )
    assert parse_ignore("SET_SLAVE_REQ_FD.fds").requests == ("SET_SLAVE_REQ_FD",)


@pytest.mark.parametrize("text", ["", "NO_SUCH_REQUEST.value", "GET_FEATURES."])
def test_bad_ignore(text: str) -> None:
    with pytest.raises(RuleError):
        parse_ignore(text)


def test_mask_by_number_mask_and_name() -> None:
    mask = parse_mask(["5,0x1000", "FLUSH", "RING_EVENT_IDX"], DeviceType.BLK)
    assert mask.virtio == (1 << 5) | 0x1000 | (1 << 9) | (1 << 29)
    assert mask.protocol == 0


def test_mask_protocol_features() -> None:
    mask = parse_mask(["protocol:INFLIGHT_SHMFD,protocol:0", "protocol:SLAVE_REQ"])
    assert mask == FeatureMask(0, (1 << 12) | 1 | (1 << 5))


def test_device_names_need_the_device_when_ambiguous() -> None:
    assert parse_mask(["MQ"], DeviceType.BLK).virtio == 1 << 12
    assert parse_mask(["MQ"], DeviceType.NET).virtio == 1 << 22
    with pytest.raises(RuleError, match="ambiguous"):
        parse_mask(["MQ"])


@pytest.mark.parametrize("text", ["NOT_A_FEATURE", "64", "protocol:NOPE", "x12"])
def test_bad_mask(text: str) -> None:
    with pytest.raises(RuleError):
        parse_mask([text], DeviceType.BLK)


def test_defaults_excuse_what_differs_between_runs() -> None:
    rules = build_rules()
    assert rules.ignored("GET_VRING_BASE", "reply", Side.BACKEND, "num")
    assert rules.ignored("SET_VRING_ADDR", "request", Side.FRONTEND, "desc_user_addr")
    assert rules.ignored("ADD_MEM_REG", "reply", Side.BACKEND, "userspace_addr")
    assert rules.ignored("SET_MEM_TABLE", "request", Side.FRONTEND, "regions.userspace_addr")
    # ...but nothing that tells behaviour
    assert not rules.ignored("GET_FEATURES", "reply", Side.BACKEND, "features")
    assert not rules.ignored("GET_VRING_BASE", "reply", Side.BACKEND, "index")
    assert not rules.ignored("ADD_MEM_REG", "request", Side.FRONTEND, "guest_phys_addr")
    assert not rules.ignored("SET_VRING_ADDR", "request", Side.FRONTEND, "flags")


def test_defaults_can_be_turned_off_and_user_rules_say_why() -> None:
    rules = build_rules(["GET_CONFIG.region"], defaults=False)
    assert not rules.ignored("GET_VRING_BASE", "reply", Side.BACKEND, "num")
    reason = rules.ignored("GET_CONFIG", "reply", Side.BACKEND, "region")
    assert reason == "--ignore GET_CONFIG.region"
