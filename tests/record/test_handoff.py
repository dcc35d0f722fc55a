"""The typed hand-off from relay to recorder: every item comes back as it went."""

from __future__ import annotations

from vhtrace.protocol.findings import Finding, Severity
from vhtrace.record import handoff
from vhtrace.record.handoff import Answer, Failed, Finished, Relayed, Release, SnapshotNow, Stop
from vhtrace.trace.records import EventRecord, FindingRecord, MessageRecord, StreamRecord


def test_every_hand_off_item_survives_the_socket() -> None:
    notes = ({"interposed": "backend"}, {})
    message = MessageRecord(3, 10, 20, 1, "main", "frontend", b"\x01" * 12, notes, 0)
    items = [
        Relayed(message, 2, hold=4),
        Relayed(StreamRecord(4, 11, 21, 1, "gpu", "backend", b"abc", ({},)), 1),
        EventRecord(12, 22, 1, "session-start", {"frontend": {"pid": 5}}),
        FindingRecord(1, Finding(3, "GET_FEATURES", "io-error", "it broke", Severity.ERROR)),
        SnapshotNow("signal"),
        Stop({"x": 1}),
        Answer(4, True),
        Release(4),
        Failed({"failed": "disk"}),
        Finished({"sessions": 1}),
    ]
    unpacker = handoff.unpacker()
    unpacker.feed(b"".join(handoff.encode(item) for item in items))
    assert [handoff.decode(fields) for fields in unpacker] == items
