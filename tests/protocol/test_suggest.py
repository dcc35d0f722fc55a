"""'did you mean' for misspelt request names: close names from the spec, none for nonsense."""

from __future__ import annotations

from vhtrace.protocol import spec
from vhtrace.protocol.suggest import ALL_NAMES, close_request_names, did_you_mean


def test_every_request_of_both_channels_is_a_candidate() -> None:
    assert "SET_VRING_KICK" in ALL_NAMES
    assert {"BACKEND_" + row.name for row in spec.BACKEND_REQUESTS} <= set(ALL_NAMES)
    assert sorted(set(ALL_NAMES)) == ALL_NAMES


def test_a_misspelt_name_gets_the_request_it_meant_first() -> None:
    assert close_request_names("SET_VRING_KIK")[0] == "SET_VRING_KICK"
    assert close_request_names("get_features")[0] == "GET_FEATURES"


def test_the_c_prefix_and_spaces_are_not_part_of_the_name() -> None:
    assert close_request_names("  VHOST_USER_SET_MEM_TABEL ")[0] == "SET_MEM_TABLE"


def test_at_most_n_names_come_back() -> None:
    assert 1 <= len(close_request_names("SET_VRING", n=2)) <= 2


def test_did_you_mean_is_a_suffix_or_nothing() -> None:
    assert did_you_mean("SET_OWNR").startswith(" (did you mean SET_OWNER")
    assert did_you_mean("SET_OWNR").endswith("?)")
    assert did_you_mean("ZZZZZZZZZZZZ") == ""
