"""Display filters shared by the verbs that read traces."""

from __future__ import annotations

import argparse
import fnmatch
from dataclasses import dataclass, field

from vhtrace.analysis import AnalysedMessage
from vhtrace.cli.common import UsageError
from vhtrace.protocol import spec
from vhtrace.protocol.findings import Severity
from vhtrace.protocol.suggest import did_you_mean


def display_name(channel: str, name: str) -> str:
    """A request's name as the filters match it: BACKEND_ before a back-end channel's."""
    return (
        "BACKEND_" + name
        if channel == spec.Channel.BACKEND and not name.startswith("UNKNOWN")
        else name
    )


@dataclass
class RequestFilter:
    """Requests by name, alias, id or glob (SET_VRING_*); replies match their request."""

    exact: set[tuple[str, int]] = field(default_factory=set)
    globs: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, terms: list[str]) -> RequestFilter | None:
        if not terms:
            return None
        result = cls()
        for term in (t.strip() for item in terms for t in item.split(",")):
            if not term:
                continue
            if term.isdigit():
                result.exact.add((spec.Channel.MAIN.value, int(term)))
            elif any(c in term for c in "*?["):
                result.globs.append(term.upper().removeprefix("VHOST_USER_"))
            else:
                found = spec.lookup_request(term)
                if found is None:
                    hint = did_you_mean(term)
                    raise UsageError(f"--request {term}: no such request{hint}")
                result.exact.add((found[0].value, found[1]))
        return result

    def matches(self, channel: str, request_id: int, name: str) -> bool:
        if (channel, request_id) in self.exact:
            return True
        shown = display_name(channel, name)
        return any(
            fnmatch.fnmatchcase(shown, g) or fnmatch.fnmatchcase(name, g) for g in self.globs
        )


def parse_range(text: str | None) -> tuple[int, int] | None:
    """'10-20', '10-', '-20' or '15' -> inclusive message-number bounds."""
    if not text:
        return None
    try:
        if "-" in text:
            low, high = text.split("-", 1)
            return (int(low) if low else 0, int(high) if high else 1 << 62)
        return (int(text), int(text))
    except ValueError:
        raise UsageError(f"--range {text}: expected N, A-B, A- or -B") from None


@dataclass
class MessageFilter:
    requests: RequestFilter | None = None
    channel: str | None = None
    sender: str | None = None
    seq_range: tuple[int, int] | None = None
    session: int | None = None
    findings_only: bool = False
    min_severity: Severity | None = None

    def matches(self, item: AnalysedMessage) -> bool:
        record = item.record
        if self.seq_range and not self.seq_range[0] <= record.seq <= self.seq_range[1]:
            return False
        if self.channel and record.channel != self.channel:
            return False
        if self.sender and record.sender != self.sender:
            return False
        if self.session is not None and record.session != self.session:
            return False
        if self.findings_only and not item.analysis.findings:
            return False
        if self.requests is not None:
            request_id = item.wire.request
            return self.requests.matches(record.channel, request_id, item.analysis.name)
        return True

    @property
    def narrows_events(self) -> bool:
        """Connection events are shown only when no message filter is set."""
        return bool(
            self.requests or self.channel or self.sender or self.seq_range or self.findings_only
        )


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "-r",
        "--request",
        action="append",
        default=[],
        metavar="NAME",
        help="only these requests (names, old SLAVE_ names, ids or globs like 'SET_VRING_*'; "
        "repeat or separate by commas); replies match the request they answer",
    )
    add("--channel", choices=[c.value for c in spec.Channel], help="only this channel")
    add(
        "--from",
        dest="sender",
        choices=[s.value for s in spec.Side],
        help="only messages sent by this side",
    )
    add("--range", metavar="A-B", help="only message numbers A to B (A-, -B and N work too)")
    add("--session", type=int, metavar="N", help="only this session")
    add("--findings", action="store_true", help="only messages with findings")
    add(
        "--device",
        choices=[d.value for d in spec.DeviceType],
        help="name virtio feature bits for this device type (default: the trace's)",
    )


def filter_from_args(args: argparse.Namespace) -> MessageFilter:
    return MessageFilter(
        requests=RequestFilter.parse(args.request),
        channel=args.channel,
        sender=args.sender,
        seq_range=parse_range(args.range),
        session=args.session,
        findings_only=args.findings,
    )
