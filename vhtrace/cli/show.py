"""``vhtrace show TRACE``: one line per message, like tshark reads a capture."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable

from vhtrace import render
from vhtrace.analysis import AnalysedMessage, Item, LateFindings, analyser_for
from vhtrace.cli import common
from vhtrace.cli.filters import MessageFilter, add_filter_arguments, filter_from_args
from vhtrace.cli.verbs import help_of
from vhtrace.protocol.findings import Severity
from vhtrace.trace.records import (
    EndRecord,
    EventRecord,
    FindingRecord,
    MessageRecord,
    SnapshotRecord,
)

SEVERITY_ORDER = {"warning": 1, "error": 2}
_BATCH = 256
"""Output lines per write."""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "show",
        help=help_of("show"),
        description="Print the messages of a trace, one line each (tshark style). A cut-short "
        "trace prints everything readable, warns and exits 2.",
    )
    parser.add_argument("trace", help="trace file (- for stdin)")
    parser.add_argument("-V", "--verbose", action="store_true", help="every field decoded")
    parser.add_argument(
        "-x",
        "--hex",
        action="store_true",
        help="hex dump of each message (with --json: a raw field)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "-c", "--count", type=_count, metavar="N", help="stop after N messages (N >= 1)"
    )
    parser.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="a trace being recorded: print messages as they are written, until the "
        "recorder ends it (or Ctrl-C)",
    )
    parser.add_argument(
        "--fail-on",
        choices=["error", "warning"],
        help="exit 1 if a finding of this severity (or worse) is shown",
    )
    add_filter_arguments(parser)
    parser.set_defaults(run=run)


def message_renderer(
    header: dict[str, object], args: argparse.Namespace, json_out: render.JsonRenderer | None
) -> Callable[[AnalysedMessage], str]:
    """How a message prints with these options."""
    if json_out is not None:
        return json_out.message
    verbose, hexdump = args.verbose, args.hex

    def text(item: AnalysedMessage) -> str:
        parts = [render.message_line(header, item)]
        findings = item.analysis.findings
        if verbose:
            parts.append("\n".join(render.message_verbose(header, item)))
        elif findings:
            parts.append("\n".join(render.finding_lines(findings)))
        if hexdump:
            parts.append("\n".join(render.hexdump(item.record.raw)))
        return "\n".join(parts)

    return text


def _count(text: str) -> int:
    """-c N as tshark takes it: a positive count (0 is an error, not "one" or "all")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: a count of at least 1")
    return value


def _wait_for(path: str) -> None:
    """--follow on a trace not created yet waits for it, as ``tail -F`` does."""
    if os.path.exists(path):
        return
    common.warn(f"{path}: not there yet, waiting for it (Ctrl-C stops)")
    while not os.path.exists(path):
        time.sleep(0.1)


def run(args: argparse.Namespace) -> int:
    if args.follow and args.trace == "-":
        raise common.UsageError("--follow reads a trace file, not stdin")
    message_filter = filter_from_args(args)
    filtering = message_filter != MessageFilter()
    out = sys.stdout
    lines: list[str] = []
    """Output lines not written yet: written in batches, a write per line costs more."""

    def flush() -> None:
        if lines:
            lines.append("")
            text = "\n".join(lines)
            lines.clear()
            out.write(text)

    def idle() -> None:
        """Following a live trace and nothing new yet: show what there is."""
        flush()
        out.flush()

    if args.follow:
        _wait_for(args.trace)
    reader = common.open_trace(args.trace, follow=args.follow, on_idle=idle)
    header = reader.header
    analyser = analyser_for(header, args.device)
    json_out = render.JsonRenderer(header, with_raw=args.hex) if args.json else None
    render_message = message_renderer(header, args, json_out)
    emit = lines.append
    shown = 0
    limit = args.count
    worst = 0
    show_events = not message_filter.narrows_events
    by_message = bool(message_filter.requests or message_filter.channel or message_filter.sender)
    about_filter = dataclasses.replace(message_filter, findings_only=False, seq_range=None)
    matched: set[int] = set()
    """Messages that pass the request/channel/direction filters (only kept when set)."""
    fail_level = SEVERITY_ORDER.get(args.fail_on or "", 99)

    def note(findings_severities: list[Severity]) -> None:
        nonlocal worst
        for severity in findings_severities:
            worst = max(worst, SEVERITY_ORDER[severity])

    def about_shown(seq: int | None) -> bool:
        """A finding found later belongs with its message: shown if that one is."""
        if not by_message:
            return True
        return seq is not None and seq in matched

    def other(item: Item) -> None:
        """Everything but a message: late findings, the recorder's findings, events."""
        if isinstance(item, LateFindings):
            if message_filter.session not in (None, item.session):
                return
            findings = [
                f for f in item.findings
                if _seq_in_range(f.seq, message_filter.seq_range) and about_shown(f.seq)
            ]  # fmt: skip
            note([f.severity for f in findings])
            for finding in findings:
                if json_out is not None:
                    emit(json_out.finding(item.session, finding))
                else:
                    emit(render.late_finding_lines(LateFindings(item.session, [finding]))[0])
        elif isinstance(item, FindingRecord):
            # the recorder's findings obey --session and --range as the late ones do
            if (
                message_filter.session not in (None, item.session)
                or not _seq_in_range(item.finding.seq, message_filter.seq_range)
                or not about_shown(item.finding.seq)
            ):
                return
            note([item.finding.severity])
            if json_out is not None:
                emit(json_out.finding(item.session, item.finding))
            else:
                emit(render.transport_finding_line(item))
        elif isinstance(item, EventRecord) and show_events:
            if message_filter.session not in (None, item.session):
                return
            emit(json_out.event(item) if json_out else render.event_line(header, item))
        elif isinstance(item, SnapshotRecord) and show_events:
            if message_filter.session not in (None, item.session):
                return
            emit(json_out.snapshot(item) if json_out else render.snapshot_line(header, item))
        elif isinstance(item, EndRecord) and json_out is not None and show_events:
            emit(json_out.end(item))

    # Analyser.run(reader), unrolled: messages, nearly all the records, skip a generator.
    try:  # what is rendered gets written, even if something below fails
        message = analyser.message
        for record in reader:
            if type(record) is not MessageRecord:
                for item in analyser.feed(record):
                    other(item)
                continue
            item = message(record)
            if by_message and about_filter.matches(item):
                matched.add(record.seq)
            if filtering and not message_filter.matches(item):
                continue
            findings = item.analysis.findings
            if findings:
                note([f.severity for f in findings])
            emit(render_message(item))
            if len(lines) >= _BATCH:
                flush()
            shown += 1
            if limit is not None and shown >= limit:
                break
        else:
            for item in analyser.finish():
                other(item)
    finally:
        flush()
    out.flush()
    damaged = common.report_damage(reader) if args.count is None else common.EXIT_OK
    reader.close()
    if damaged:
        return damaged
    return common.EXIT_FOUND if worst >= fail_level else common.EXIT_OK


def _seq_in_range(seq: int | None, bounds: tuple[int, int] | None) -> bool:
    return bounds is None or seq is None or bounds[0] <= seq <= bounds[1]
