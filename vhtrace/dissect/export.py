"""A trace as a pcapng file that Wireshark reads with ``vhost-user.lua``.

One packet per message, in trace order, stamped with its wall-clock time (ns).
With the default link type (Wireshark's exported PDU, 252) each packet is the
exported-PDU TLVs naming the ``vhost-user`` dissector and the direction, then
the message bytes exactly as recorded; with ``user`` (DLT_USER0, 147) it is the
message bytes alone. Either way the packet's comments carry what the bytes do
not say (see :mod:`vhtrace.dissect.meta`), the pcapng direction flag says who
sent it (outbound = the front-end), and a message the recorder kept only a
prefix of keeps its true length as the packet's original length.

The trace is read twice: findings known only at a session's end (a reply that
never came) are about earlier messages, and a pcapng cannot be amended, so a
first pass collects them and the second writes every packet with all its
findings. Findings about no message in particular go in the section comments.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from vhtrace import __version__
from vhtrace.analysis import AnalysedMessage, Analyser, LateFindings, device_of
from vhtrace.dissect import exported_pdu
from vhtrace.dissect.meta import RecordInfo, comments
from vhtrace.dissect.pcapng import INBOUND, OUTBOUND, PcapNgWriter
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.spec import HEADER_SIZE, Side
from vhtrace.trace.reader import TraceReader
from vhtrace.trace.records import FindingRecord

Source = str | os.PathLike[str] | BinaryIO
"""A trace path, or a seekable binary file (read twice)."""


class LinkType(enum.StrEnum):
    UPPER_PDU = "upper-pdu"
    """LINKTYPE_WIRESHARK_UPPER_PDU: Wireshark picks the dissector by name, no setup."""
    USER = "user"
    """DLT_USER0: the bare message; the Lua dissector registers itself for it."""

    @property
    def number(self) -> int:
        if self is LinkType.USER:
            return exported_pdu.LINKTYPE_USER0
        return exported_pdu.LINKTYPE_WIRESHARK_UPPER_PDU


_PCAPNG_DIRECTION = {Side.FRONTEND: OUTBOUND, Side.BACKEND: INBOUND}
_P2P_DIRECTION = {Side.FRONTEND: exported_pdu.P2P_DIR_SENT, Side.BACKEND: exported_pdu.P2P_DIR_RECV}


@dataclass
class Late:
    """What the first pass learns: findings by message, and those about no message."""

    by_seq: dict[int, list[Finding]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    problem: str | None = None

    def add(self, session: int, finding: Finding, seqs: set[int]) -> None:
        if finding.seq is not None and finding.seq in seqs:
            self.by_seq.setdefault(finding.seq, []).append(finding)
        else:
            self.general.append(f"session {session}: {finding.severity}: {finding}")


@dataclass(frozen=True)
class ExportResult:
    packets: int
    problem: str | None
    """Why the trace ended early (None if it was complete)."""


def _open(source: Source) -> TraceReader:
    if not isinstance(source, str | os.PathLike):
        source.seek(0)
    return TraceReader(source)


def collect_late_findings(source: Source) -> Late:
    """First pass: the findings that arrive after the message they are about."""
    late = Late()
    seqs: set[int] = set()
    with _open(source) as reader:
        for item in Analyser(device_of(reader.header)).run(reader):
            if isinstance(item, AnalysedMessage):
                seqs.add(item.record.seq)
            elif isinstance(item, LateFindings):
                for finding in item.findings:
                    late.add(item.session, finding, seqs)
            elif isinstance(item, FindingRecord):
                late.add(item.session, item.finding, seqs)
        late.problem = reader.problem
    return late


def section_comments(header: dict[str, Any], late: Late) -> list[str]:
    """The section's comments: where the trace came from, and what is wrong with it."""
    lines = [
        f"vhtrace trace recorded by {header.get('tool', '?')} on {header.get('host', '?')}"
        + (f", device {header['device']}" if header.get("device") else "")
    ]
    if header.get("command"):
        lines.append("command: " + " ".join(map(str, header["command"])))
    lines += late.general
    if late.problem:
        lines.append(f"trace cut short: {late.problem}")
    return lines


def packet_bytes(raw: bytes, info: RecordInfo, linktype: LinkType) -> tuple[bytes, int | None]:
    """The packet data of a message, and its original length when only a prefix was kept."""
    prefix = b""
    if linktype is LinkType.UPPER_PDU:
        prefix = exported_pdu.header(direction=_P2P_DIRECTION[info.sender])
    original = None
    if info.cut and len(raw) >= HEADER_SIZE:
        original = len(prefix) + HEADER_SIZE + int.from_bytes(raw[8:12], "little")
    return prefix + raw, original


def export_trace(
    source: Source, out: BinaryIO, linktype: LinkType = LinkType.UPPER_PDU
) -> ExportResult:
    """Write every message of a trace to ``out`` as pcapng."""
    late = collect_late_findings(source)
    with _open(source) as reader:
        writer = PcapNgWriter(
            out,
            linktype.number,
            application=f"vhtrace {__version__}",
            comments=section_comments(reader.header, late),
            if_name="vhost-user",
            if_description=f"vhost-user messages of {reader.path}",
        )
        for item in Analyser(device_of(reader.header)).run(reader):
            if not isinstance(item, AnalysedMessage):
                continue
            record = item.record
            info = RecordInfo.of(item).with_findings(late.by_seq.get(record.seq, []))
            data, original = packet_bytes(record.raw, info, linktype)
            writer.packet(
                data,
                record.wall_ns,
                original_length=original,
                comments=comments(info),
                direction=_PCAPNG_DIRECTION[info.sender],
            )
        return ExportResult(writer.packets, reader.problem)
