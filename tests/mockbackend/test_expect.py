"""Expectations a script states, reported at the end of the session."""

from __future__ import annotations

import re

from mockbackend import BlkDevice, Script, expect
from mockbackend.testing import FakeFrontend


def test_expectations_are_reported_at_the_end(image) -> None:
    script = Script(BlkDevice(image))
    script.expect(expect.kick_before_enable())
    script.expect(expect.received("GET_CONFIG"))
    script.expect(expect.never("RESET_OWNER"))
    script.expect(expect.order("SET_OWNER", "SET_MEM_TABLE"))
    script.expect(expect.no_violations())
    fe = FakeFrontend(script)
    fe.negotiate()
    fe.set_mem_table()
    fe.ask("SET_VRING_ENABLE", {"index": 0, "num": 1}, need_reply=True)  # no kick before
    fe.send("RESET_OWNER")
    fe.send("SET_VRING_NUM", {"index": 0, "num": 3})
    fe.ask("GET_FEATURES")
    report = fe.close()
    text = "\n".join(report.expectation_failures)
    assert "ring 0 enabled before its kick fd" in text
    assert "expected GET_CONFIG at least 1 time, received 0" in report.expectation_failures
    [reset] = [line for line in report.expectation_failures if "RESET_OWNER" in line]
    assert re.fullmatch(r"expected RESET_OWNER 0 times, received 1 \(#\d+\)", reset), reset
    assert "ring size 3 is not a power of two" in text
    assert "SET_OWNER before SET_MEM_TABLE" not in text
    assert not report.ok()
