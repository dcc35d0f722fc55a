"""A trace as a scapy packet list: each message a packet that knows its place.

Each message of the trace becomes a :class:`~vhtrace.dissect.scapy_layers.VhostUser`
(or ``VhostUserBackend``) packet dissected with the layout the conversation
found (so a reply reads as what it answers) and carrying what the trace knows:
``.time`` (wall clock, seconds), ``.direction`` (pcapng convention: 2 outbound
for the front-end's messages, 1 inbound for the back-end's), ``.comments``
(the same lines ``vhtrace export`` writes), and ``.record``, a
:class:`~vhtrace.dissect.meta.RecordInfo` with session, seq, channel, sender,
fds and findings (also as ``.session``, ``.seq``, ``.sender``, ``.fds``,
``.findings``).
"""

from __future__ import annotations

import os
from typing import Any

from scapy.packet import Packet
from scapy.plist import PacketList

from vhtrace.analysis import AnalysedMessage, Analyser, LateFindings, device_of
from vhtrace.dissect.meta import RecordInfo, comments
from vhtrace.dissect.scapy_layers import (
    HEADER_CLASSES,
    VhostUser,
    VhostUserBackend,
    VhostUserHeader,
)
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.spec import HEADER_SIZE, Side
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import FindingRecord

PCAPNG_INBOUND = 1
PCAPNG_OUTBOUND = 2
DIRECTION = {Side.FRONTEND: PCAPNG_OUTBOUND, Side.BACKEND: PCAPNG_INBOUND}
"""pcapng direction of a message by its sender: as seen from the front-end."""


def session_key(packet: Packet) -> str:
    """What ``sessions()`` groups by: the vhost-user connection."""
    record = getattr(packet, "record", None)
    return f"vhost-user session {record.session}" if record is not None else "Other"


class VhostUserTrace(PacketList):
    """A PacketList whose ``sessions()`` are the trace's connections.

    ``header`` is the trace header; ``problem`` says why the trace ended early
    (None if it was complete)."""

    def __init__(self, res: Any = None, name: str = "vhost-user trace", stats: Any = None) -> None:
        super().__init__(res, name, stats or [VhostUser, VhostUserBackend])
        self.header: dict[str, Any] = {}
        self.problem: str | None = None

    def sessions(self, session_extractor: Any = None) -> dict[str, Any]:
        return super().sessions(session_extractor or session_key)


def packet_of(info: RecordInfo, raw: bytes) -> VhostUserHeader:
    """The scapy packet of one recorded message."""
    packet = HEADER_CLASSES[info.channel](
        raw, layout=info.layout, context=info.context, record=info
    )
    packet.time = info.wall_ns / 1e9
    packet.direction = DIRECTION[info.sender]
    packet.comments = [line.encode() for line in comments(info)]
    if len(raw) >= HEADER_SIZE and info.cut:
        packet.wirelen = HEADER_SIZE + packet.size
    return packet


def _attach(packet: VhostUserHeader, extra: list[Finding]) -> None:
    """Findings known only later (no reply came, the recorder's own) join their message."""
    info = packet.record
    assert info is not None
    packet.record = info.with_findings(extra)
    packet.comments = [line.encode() for line in comments(packet.record)]


def read_trace(path: str | os.PathLike[str]) -> VhostUserTrace:
    """Every message of a trace as scapy packets, in trace order.

    Raises :class:`vhtrace.trace.reader.TraceError` if the file is not a
    trace; a trace cut short gives what it holds and says why in ``problem``."""
    packets = VhostUserTrace()
    by_seq: dict[int, VhostUserHeader] = {}
    with TraceReader(path) as reader:
        packets.header = reader.header
        for item in Analyser(device_of(reader.header)).run(reader):
            if isinstance(item, AnalysedMessage):
                packet = packet_of(RecordInfo.of(item), item.record.raw)
                by_seq[item.record.seq] = packet
                packets.append(packet)
            elif isinstance(item, LateFindings):
                for finding in item.findings:
                    if finding.seq in by_seq:
                        _attach(by_seq[finding.seq], [finding])
            elif isinstance(item, FindingRecord) and item.finding.seq in by_seq:
                _attach(by_seq[item.finding.seq], [item.finding])
        packets.problem = reader.problem
    return packets
