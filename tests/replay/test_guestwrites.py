"""Guest actions a trace asks replay to make: a write by memfd and offset, as a fuzz
reproducer says it, reaches that memfd and never past its end."""

from __future__ import annotations

import os

from vhtrace.replay.guestwrites import GUEST_WRITE, GuestAction, GuestMemoryFds, action_of
from vhtrace.trace.records import EventRecord


def _event(info: dict) -> EventRecord:
    return EventRecord(1, 1, 1, GUEST_WRITE, info)


def test_a_write_by_memfd_round_trips_through_its_event() -> None:
    action = GuestAction(5, data=b"desc", memfd=(3, 1), offset=0x40)
    assert action_of(_event(action.event()[1])) == action
    negative = {"after": 5, "message": 3, "fd": -1, "offset": 0, "data": b"x"}
    assert action_of(_event(negative)) is None
    gpa = GuestAction(5, 0x1000, b"ring")
    assert action_of(_event(gpa.event()[1])) == gpa


def test_a_write_by_memfd_lands_in_that_memfd_and_never_past_its_end() -> None:
    factory = GuestMemoryFds(None)
    try:
        made = factory.make({"kind": "memfd", "size": 0x1000}, seq=3, index=0, fields=None)
        assert factory.make_action(GuestAction(4, data=b"chain", memfd=(3, 0), offset=0x10))
        assert os.pread(made.fd, 5, 0x10) == b"chain"
        assert not factory.make_action(GuestAction(4, data=b"xx", memfd=(3, 0), offset=0xFFF))
        assert not factory.make_action(GuestAction(4, data=b"x", memfd=(9, 0), offset=0))
        assert os.fstat(made.fd).st_size == 0x1000
    finally:
        factory.close()
