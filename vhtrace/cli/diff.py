"""``vhtrace diff OLD NEW``: what two recorded conversations say differently; exit 1 if any."""

from __future__ import annotations

import argparse
import json

from vhtrace.analysis import AnalysedMessage, analyser_for
from vhtrace.cli import common
from vhtrace.cli.matching import add_rule_arguments
from vhtrace.cli.verbs import help_of
from vhtrace.protocol.spec import DeviceType
from vhtrace.render import counted
from vhtrace.replay.compare import view
from vhtrace.replay.rules import RuleError, build_rules
from vhtrace.tracediff import Message, counts, diff_traces, render_text


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "diff",
        help=help_of("diff"),
        description="Compare two traces message by message (sessions in order; a message "
        "only one side has shows as added or removed): say what changed from OLD to NEW. "
        "Exit 0 same, 1 different, 2 unusable input.",
    )
    parser.add_argument("old", help="the trace that worked (or the older one)")
    parser.add_argument("new", help="the trace to compare with it")
    parser.add_argument(
        "--session",
        metavar="OLD[:NEW]",
        help="compare only session OLD of the old trace with session NEW of the new one "
        "(default: the same number; without --session, every session in order)",
    )
    add_rule_arguments(parser.add_argument_group("what does not count"))
    parser.add_argument("--json", action="store_true", help="the result as one JSON object")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also the differences the rules excused"
    )
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="also write both conversations side by side, aligned and highlighted, as one "
        "self-contained HTML page",
    )
    parser.set_defaults(run=run)


def _load(path: str, device: str | None) -> tuple[dict[int, list[Message]], int, int]:
    """Each session's messages, the trace's message count and its exit code (2: damaged)."""
    reader = common.open_trace(path)
    sessions: dict[int, list[Message]] = {}
    total = 0
    for item in analyser_for(reader.header, device).run(reader):
        if isinstance(item, AnalysedMessage):
            record = item.record
            message = Message(record.seq, view(item.wire, item.analysis, record.fds))
            sessions.setdefault(record.session, []).append(message)
            total += 1
    damaged = common.report_damage(reader)
    reader.close()
    return sessions, total, damaged


def run(args: argparse.Namespace) -> int:
    if "-" in (args.old, args.new):
        raise common.UsageError("diff reads two trace files (not stdin)")
    old, old_count, old_damaged = _load(args.old, args.device)
    new, new_count, new_damaged = _load(args.new, args.device)
    # the device type that names virtio bits in --mask-features
    chosen = DeviceType(args.device) if args.device else None
    device = chosen or _first_device(new) or _first_device(old)
    try:
        rules = build_rules(
            args.ignore, args.mask_features, device=device, defaults=not args.no_default_ignores
        )
    except RuleError as exc:
        raise common.UsageError(str(exc)) from None
    old_sessions, new_sessions = len(old), len(new)
    if args.session:
        old, new = _pick(args.session, old, new)
    results = diff_traces(old, new, rules)
    totals = counts(results)
    different = any(totals.values())
    if args.json:
        print(json.dumps({
            "old": args.old, "new": args.new, "result": "different" if different else "same",
            "counts": totals, "sessions": [r.to_dict() for r in results],
        }))  # fmt: skip
    else:
        print(f"vhtrace diff: {args.old} ({_count(old_count, old_sessions)}) -> "
              f"{args.new} ({_count(new_count, new_sessions)})")  # fmt: skip
        for line in render_text(results, verbose=args.verbose):
            print(line)
        words = ", ".join(f"{n} {kind}" for kind, n in totals.items())
        print(f"result: {'different' if different else 'same'} ({words})")
    if args.html:
        from vhtrace.cli.report import write_output
        from vhtrace.report.diffpage import render_diff_page

        write_output(args.html, render_diff_page(args.old, args.new, results, totals))
    if old_damaged or new_damaged:
        return common.EXIT_BAD_INPUT
    return common.EXIT_FOUND if different else common.EXIT_OK


def _pick(
    text: str, old: dict[int, list[Message]], new: dict[int, list[Message]]
) -> tuple[dict[int, list[Message]], dict[int, list[Message]]]:
    """--session OLD[:NEW]: just that pair."""
    first, _, second = text.partition(":")
    try:
        old_number, new_number = int(first), int(second or first)
    except ValueError:
        raise common.UsageError(f"--session {text}: expected OLD or OLD:NEW, numbers") from None
    for number, sessions, which in ((old_number, old, "old"), (new_number, new, "new")):
        if number not in sessions:
            have = ", ".join(map(str, sessions)) or "none"
            raise common.UsageError(f"--session {text}: the {which} trace has no session "
                                    f"{number} (it has {have})")  # fmt: skip
    return {old_number: old[old_number]}, {new_number: new[new_number]}


def _first_device(sessions: dict[int, list[Message]]) -> DeviceType | None:
    for messages in sessions.values():
        for message in messages:
            if message.view.context.device is not None:
                return message.view.context.device
    return None


def _count(messages: int, sessions: int) -> str:
    return f"{counted(messages, 'message')}, {counted(sessions, 'session')}"
