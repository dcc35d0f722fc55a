"""What a recorded message knows beyond its bytes, and how it travels in a capture.

A vhost-user message alone does not say which socket it crossed (the main
socket or the back-end channel, whose request ids overlap), who sent it, which
request a reply answers (and so by which layout its payload reads), or which
fds rode with it. The trace knows; a pcap packet does not. So every exported
packet carries pcapng comments, in this order:

1. the metadata line, machine-readable, always first::

       vhtrace: v=1 session=1 seq=12 channel=main sender=backend role=reply
       request=GET_VRING_BASE layout=vring_base answers=11 ctx=packed device=blk

   (one line; keys without a value are left out). The Lua dissector reads it to
   pick the channel's request table and the payload layout; ``v`` is bumped if
   a key changes meaning;
2. one ``fd N: ...`` line per fd passed with the message;
3. one ``<severity>: <finding>`` line per finding about the message.

Comments work the same with either link type (exported PDU or a USER DLT) and
are shown by Wireshark as they are, so the metadata stays readable without
vhtrace. :func:`vhtrace.scapy.read_trace` puts the same lines in each packet's
``comments``, so that ``wrpcapng`` of its packets is readable by the same Lua.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vhtrace.analysis import AnalysedMessage
from vhtrace.protocol.findings import Finding
from vhtrace.protocol.payloads import DEFAULT_CONTEXT, PayloadContext
from vhtrace.protocol.spec import Channel, Side
from vhtrace.render import fd_details
from vhtrace.trace import format as fmt

META_PREFIX = "vhtrace:"
META_VERSION = 1

_CUT_FLAGS = (
    (fmt.MESSAGE_OVERSIZED, "oversized"),
    (fmt.MESSAGE_INCOMPLETE, "incomplete"),
    (fmt.MESSAGE_DROPPED, "dropped"),
)


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """One message's place in its trace: everything but its bytes."""

    session: int
    seq: int
    channel: Channel
    sender: Side
    role: str
    """request, reply or postcopy-ack (see :class:`vhtrace.protocol.conversation.Role`)."""
    name: str
    """The request's name; a reply carries the name of the request it answers."""
    layout: str | None
    """The payload layout the conversation read it by (None: unknown request)."""
    context: PayloadContext = DEFAULT_CONTEXT
    answers: int | None = None
    """For a reply: the seq of the request it answers."""
    fds: tuple[dict[str, Any], ...] = ()
    findings: tuple[Finding, ...] = ()
    record_flags: int = 0
    """MESSAGE_* bits of the trace format (payload cut, dropped)."""
    wall_ns: int = 0
    mono_ns: int = 0

    @classmethod
    def of(cls, item: AnalysedMessage) -> RecordInfo:
        """The record info of an analysed message (its findings included)."""
        record, analysis = item.record, item.analysis
        return cls(
            session=record.session,
            seq=record.seq,
            channel=analysis.channel,
            sender=analysis.sender,
            role=str(analysis.role),
            name=analysis.name,
            layout=analysis.layout,
            context=analysis.context,
            answers=analysis.answers,
            fds=tuple(record.fds),
            findings=tuple(analysis.findings),
            record_flags=record.flags,
            wall_ns=record.wall_ns,
            mono_ns=record.mono_ns,
        )

    def with_findings(self, extra: list[Finding]) -> RecordInfo:
        """The same, with findings known only later (a reply that never came)."""
        if not extra:
            return self
        return dataclasses.replace(self, findings=self.findings + tuple(extra))

    @property
    def cut(self) -> list[str]:
        """Why the recorded bytes are not the whole message, if they are not."""
        return [word for bit, word in _CUT_FLAGS if self.record_flags & bit]


def meta_line(info: RecordInfo) -> str:
    """The machine-readable first comment of an exported packet."""
    items: list[tuple[str, object]] = [
        ("v", META_VERSION),
        ("session", info.session),
        ("seq", info.seq),
        ("channel", info.channel.value),
        ("sender", info.sender.value),
        ("role", info.role),
        ("request", info.name),
        ("layout", info.layout),
        ("answers", info.answers),
    ]
    ctx = [name for name in ("packed", "xen_mmap") if getattr(info.context, name)]
    items.append(("ctx", ",".join(ctx) or None))
    items.append(("device", info.context.device.value if info.context.device else None))
    items.append(("cut", ",".join(info.cut) or None))
    return " ".join([META_PREFIX] + [f"{key}={value}" for key, value in items if value is not None])


def parse_meta_line(text: str) -> dict[str, str] | None:
    """The key/value pairs of a metadata line, or None if the text is not one."""
    if not text.startswith(META_PREFIX + " "):
        return None
    pairs = (word.partition("=") for word in text[len(META_PREFIX) :].split())
    return {key: value for key, _, value in pairs if key}


def fd_lines(info: RecordInfo) -> list[str]:
    return [f"fd {index}: {fd_details(meta)}" for index, meta in enumerate(info.fds)]


def finding_lines(info: RecordInfo) -> list[str]:
    return [f"{finding.severity}: {finding}" for finding in info.findings]


def comments(info: RecordInfo) -> list[str]:
    """All the comments of an exported packet, metadata line first."""
    return [meta_line(info), *fd_lines(info), *finding_lines(info)]
