"""What a snapshot decodes: ring configurations checked before decoding."""

from __future__ import annotations

from vhtrace.memory.plan import config_problem


def test_ring_configurations_from_a_trace_are_checked_before_decoding() -> None:
    assert config_problem({"index": 0, "num": 8, "desc_gpa": None}) is None
    assert config_problem("ring") == "not a map"
    assert config_problem({"index": 0}) == "no num"
    assert config_problem({"index": 0, "num": 8, "desc_gpa": "0x10"}) == "desc_gpa is not a number"
