"""``vhtrace report TRACE -o report.html``: the conversation as a message-sequence chart,
in one self-contained HTML page (or an SVG with ``--svg``)."""

from __future__ import annotations

import argparse
import os
import sys

from vhtrace.cli import common
from vhtrace.cli.filters import add_filter_arguments, filter_from_args
from vhtrace.cli.verbs import help_of
from vhtrace.report import model


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "report",
        help=help_of("report"),
        description="Draw a trace as a message-sequence chart: front-end and back-end "
        "lanes (and the back-end channel, the streams), one arrow per message with its "
        "name and summary, replies joined to their requests with the round-trip time, "
        "findings, snapshots with their rings, idle gaps collapsed, sessions with their "
        "features and milestones; click a message for its fields (as show -V). One HTML "
        "file that needs no network; --svg for a picture to paste into a bug report. A "
        "cut-short trace is drawn as far as it reads, with a warning, and exits 2.",
    )
    parser.add_argument("trace", help="trace file (- for stdin: then without the rings)")
    parser.add_argument(
        "-o", "--output", default="-", metavar="FILE", help="where to write (default: stdout)"
    )
    parser.add_argument("--svg", action="store_true", help="an SVG picture instead of HTML")
    parser.add_argument(
        "--gap",
        type=float,
        default=model.DEFAULT_GAP_S,
        metavar="SECONDS",
        help=f"collapse idle times longer than this (default {model.DEFAULT_GAP_S:g})",
    )
    parser.add_argument("--title", help="the page's title (default: the trace's path)")
    parser.add_argument(
        "--fold",
        action="store_true",
        help="open the page with repeated runs of the same exchange folded into one row "
        "with their count (a checkbox in the page switches it)",
    )
    add_filter_arguments(parser)
    parser.set_defaults(run=run)


def write_output(path: str, text: str) -> None:
    """The report, created 0600 like the trace it shows (it says what the trace says)."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        common.fail(f"{path}: cannot write the report: {exc.strerror}")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _rings(path: str) -> dict[int, list[str]]:
    """``vhtrace rings``' view of each snapshot (imported only for a trace with some)."""
    from vhtrace.cli.rings import snapshot_texts

    return snapshot_texts(path)


def run(args: argparse.Namespace) -> int:
    if args.gap <= 0:
        raise common.UsageError(f"--gap {args.gap:g}: a number of seconds above 0")
    message_filter = filter_from_args(args)
    reader = common.open_trace(args.trace)
    rings = (lambda: _rings(args.trace)) if args.trace != "-" else None
    report = model.build(reader, message_filter=message_filter, device=args.device,
                         gap_s=args.gap, rings=rings, title=args.title)  # fmt: skip
    report.fold = args.fold
    if args.svg:
        from vhtrace.report.svg import render_svg

        text = render_svg(report)
    else:
        from vhtrace.report.page import render_page

        text = render_page(report)
    write_output(args.output, text)
    damaged = common.report_damage(reader)
    reader.close()
    return damaged
