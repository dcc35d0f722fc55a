"""``vhtrace show TRACE``: one line per message, like tshark reads a capture."""

from __future__ import annotations

import argparse
import sys

from vhtrace import render
from vhtrace.analysis import AnalysedMessage, LateFindings, analyser_for
from vhtrace.cli import common
from vhtrace.cli.filters import MessageFilter, add_filter_arguments, filter_from_args
from vhtrace.protocol.findings import Severity
from vhtrace.trace.records import EndRecord, EventRecord, FindingRecord

SEVERITY_ORDER = {"warning": 1, "error": 2}


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "show",
        help="print the messages of a trace",
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
    parser.add_argument("-c", "--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument(
        "--fail-on",
        choices=["error", "warning"],
        help="exit 1 if a finding of this severity (or worse) is shown",
    )
    add_filter_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    message_filter = filter_from_args(args)
    filtering = message_filter != MessageFilter()
    reader = common.open_trace(args.trace)
    header = reader.header
    analyser = analyser_for(header, args.device)
    out = sys.stdout
    write = out.write
    json_out = render.JsonRenderer(header, with_raw=args.hex) if args.json else None
    shown = 0
    worst = 0
    show_events = not message_filter.narrows_events
    fail_level = SEVERITY_ORDER.get(args.fail_on or "", 99)

    def note(findings_severities: list[Severity]) -> None:
        nonlocal worst
        for severity in findings_severities:
            worst = max(worst, SEVERITY_ORDER[severity])

    for item in analyser.run(reader):
        if isinstance(item, AnalysedMessage):
            if filtering and not message_filter.matches(item):
                continue
            if item.analysis.findings:
                note([f.severity for f in item.analysis.findings])
            if json_out is not None:
                write(json_out.message(item) + "\n")
            else:
                write(render.message_line(header, item) + "\n")
                if args.verbose:
                    write("\n".join(render.message_verbose(header, item)) + "\n")
                elif item.analysis.findings:
                    write("\n".join(render.finding_lines(item.analysis.findings)) + "\n")
                if args.hex:
                    write("\n".join(render.hexdump(item.record.raw)) + "\n")
            shown += 1
            if args.count is not None and shown >= args.count:
                break
        elif isinstance(item, LateFindings):
            if message_filter.session not in (None, item.session):
                continue
            findings = [f for f in item.findings if _seq_in_range(f.seq, message_filter.seq_range)]
            note([f.severity for f in findings])
            for finding in findings:
                if json_out is not None:
                    write(json_out.finding(item.session, finding) + "\n")
                else:
                    write(
                        render.late_finding_lines(LateFindings(item.session, [finding]))[0] + "\n"
                    )
        elif isinstance(item, FindingRecord):
            # the recorder's findings obey --session and --range as the late ones do
            if message_filter.session not in (None, item.session) or not _seq_in_range(
                item.finding.seq, message_filter.seq_range
            ):
                continue
            note([item.finding.severity])
            if json_out is not None:
                write(json_out.finding(item.session, item.finding) + "\n")
            else:
                write(render.transport_finding_line(item) + "\n")
        elif isinstance(item, EventRecord) and show_events:
            if message_filter.session not in (None, item.session):
                continue
            write((json_out.event(item) if json_out else render.event_line(header, item)) + "\n")
        elif isinstance(item, EndRecord) and json_out is not None and show_events:
            write(json_out.end(item) + "\n")
    out.flush()
    damaged = common.report_damage(reader) if args.count is None else common.EXIT_OK
    reader.close()
    if damaged:
        return damaged
    return common.EXIT_FOUND if worst >= fail_level else common.EXIT_OK


def _seq_in_range(seq: int | None, bounds: tuple[int, int] | None) -> bool:
    return bounds is None or seq is None or bounds[0] <= seq <= bounds[1]
