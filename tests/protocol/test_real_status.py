"""The STATUS rule against real front-ends (tests/fixtures/status/README.md says how the
traces were recorded): QEMU 7.2 and DPDK virtio-user set FEATURES_OK in different orders,
and neither is flagged; the same conversation without its SET_STATUS(FEATURES_OK) is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.protocol.conversation import Role
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import MessageRecord, Record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "status"
QEMU = FIXTURES / "qemu-dpdk-vhost-net.vht"
DPDK = FIXTURES / "dpdk-virtio-user-dpdk-vhost.vht"


def records(trace: Path) -> tuple[dict, list[Record]]:
    with TraceReader(trace) as reader:
        return reader.header, list(reader)


def analyse(header: dict, items: list[Record]) -> list[AnalysedMessage]:
    return [i for i in analyser_for(header).run(items) if isinstance(i, AnalysedMessage)]


def sequence_to_first_kick(messages: list[AnalysedMessage]) -> list[str]:
    """The status exchange from the first SET_FEATURES to the first SET_VRING_KICK."""
    names: list[str] = []
    for message in messages:
        a = message.analysis
        if a.name == "SET_VRING_KICK":
            break
        wanted = a.name in ("SET_FEATURES", "GET_STATUS", "SET_STATUS") and a.role is Role.REQUEST
        if wanted and (names or a.name == "SET_FEATURES"):
            status = a.fields.get("status") if a.name == "SET_STATUS" else None
            names.append(a.name if status is None else f"{a.name}({status:#x})")
    return names


@pytest.mark.parametrize(
    ("trace", "order"),
    [
        (QEMU, ["SET_FEATURES", "GET_STATUS", "SET_STATUS(0x8)"]),
        (DPDK, ["SET_FEATURES", "SET_STATUS(0xb)", "GET_STATUS", "GET_STATUS"]),
    ],
)
def test_real_front_ends_set_features_ok_before_the_rings_start_unflagged(trace, order) -> None:
    header, items = records(trace)
    messages = analyse(header, items)
    assert sequence_to_first_kick(messages) == order
    findings = [f for m in messages for f in m.analysis.findings]
    assert findings == [], [str(f) for f in findings]


@pytest.mark.parametrize("trace", [QEMU, DPDK])
def test_without_its_status_exchange_the_same_conversation_is_flagged(trace) -> None:
    """Drop GET_STATUS and SET_STATUS (requests and replies) before the first kick: the
    first ring that starts is then reported, once, and nothing else changes."""
    header, items = records(trace)
    messages = analyse(header, items)
    first_kick = next(m.record.seq for m in messages if m.analysis.name == "SET_VRING_KICK")
    dropped = {
        m.record.seq
        for m in messages
        if m.record.seq < first_kick and m.analysis.name in ("GET_STATUS", "SET_STATUS")
    }
    assert len(dropped) >= 3
    kept = [r for r in items if not (isinstance(r, MessageRecord) and r.seq in dropped)]
    findings = [f for m in analyse(header, kept) for f in m.analysis.findings]
    assert [(f.seq, f.code) for f in findings] == [(first_kick, "features-ok")]
