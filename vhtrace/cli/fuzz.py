"""``vhtrace fuzz``: mutate a trace's front-end side against a back-end it starts."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vhtrace.cli import common
from vhtrace.cli.verbs import help_of
from vhtrace.fuzz.backchannel import SERVED_FAMILIES
from vhtrace.fuzz.campaign import Campaign, FuzzInputError, FuzzOptions, Progress
from vhtrace.fuzz.frontend import MINIMIZE_TESTS as FRONTEND_MINIMIZE_TESTS
from vhtrace.fuzz.frontend import FrontendCampaign
from vhtrace.fuzz.mutate import FAMILIES
from vhtrace.fuzz.report import render_text
from vhtrace.fuzz.target import Target, TargetError, parse_command
from vhtrace.replay.options import ReplayInputError

R = TypeVar("R")


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "fuzz",
        help=help_of("fuzz"),
        description="Start a back-end, play the trace's front-end side against it with "
        "mutations (fields, headers, sequence, fds), and report crashes, hangs, panics and "
        "spec violations with minimized reproducer traces. Exit 0 nothing found, 1 found, "
        "2 bad input or usage.",
    )
    parser.add_argument("trace", help="trace file whose front-end side is the template")
    peer = parser.add_mutually_exclusive_group(required=True)
    peer.add_argument(
        "--backend-cmd",
        metavar="CMD",
        help="the back-end's command line, {sock} where its listening socket goes "
        "(started by the fuzzer, restarted when it dies)",
    )
    peer.add_argument(
        "--frontend-cmd",
        metavar="CMD",
        help="fuzz a front-end instead: its command line (QEMU), {sock} where it connects, "
        "{qmp} for a QMP socket (guest mode: its firmware drives the device, QMP stops and "
        "resumes it); it gets mutated back-end messages, a new one each iteration",
    )
    parser.add_argument(
        "--frontend-wait",
        type=float,
        default=2.0,
        metavar="S",
        help="with --frontend-cmd: how long a front-end that survived is left running (2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--start",
        type=int,
        default=0,
        metavar="I",
        help="begin at iteration I of the seed (iteration I always sends the same case: "
        "--start I --iterations 1 runs a finding's iteration alone)",
    )
    parser.add_argument(
        "--iterations", type=int, metavar="N", help="stop after N iterations (default 1000)"
    )
    parser.add_argument("--time", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="how long a reply the back-end owes may take before it is a hang (default 2)",
    )
    parser.add_argument(
        "--mutate",
        metavar="FAMILIES",
        help=f"comma-separated mutation families (default all: {','.join(FAMILIES)}; with "
        f"--frontend-cmd: {','.join(SERVED_FAMILIES)})",
    )
    parser.add_argument(
        "--session", type=int, action="append", metavar="N", help="use only this session"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="fuzz-findings",
        help="where reproducer traces go (default ./fuzz-findings)",
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="do not check after each iteration, with a GET_FEATURES on a new connection, "
        "that the back-end survived it (for back-ends that serve one connection and exit)",
    )
    parser.add_argument("--no-minimize", action="store_true", help="do not minimize findings")
    parser.add_argument(
        "--minimize-tests",
        type=int,
        metavar="N",
        help="most runs spent minimizing one finding (default 150; 40 with --frontend-cmd, "
        "where each run starts the front-end)",
    )
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="list minimized cases")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    parser.set_defaults(run=run)


def _options(args: argparse.Namespace) -> FuzzOptions:
    for name in ("iterations", "time", "timeout", "minimize_tests"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise common.UsageError(f"--{name.replace('_', '-')} must be positive")
    if args.start < 0:
        raise common.UsageError("--start must be 0 or more")
    iterations = args.iterations
    if iterations is None and args.time is None:
        iterations = 1000
    families = tuple(f.strip() for f in args.mutate.split(",")) if args.mutate else None
    return FuzzOptions(
        iterations=iterations,
        time_limit=args.time,
        seed=args.seed,
        start=args.start,
        timeout=args.timeout,
        families=families,
        minimize=not args.no_minimize,
        minimize_tests=args.minimize_tests or 150,
        out=Path(args.out),
        sessions=tuple(args.session) if args.session else None,
        probe=not args.no_probe,
    )


def _progress(quiet: bool):
    tty = sys.stderr.isatty()
    shown = [0.0]

    def show(progress: Progress) -> None:
        if quiet:
            return
        if tty:
            print("\r" + progress.line(), end="", file=sys.stderr, flush=True)
        elif progress.elapsed - shown[0] >= 5.0:
            shown[0] = progress.elapsed
            print(progress.line(), file=sys.stderr, flush=True)

    return show, tty


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    if args.frontend_cmd is not None:
        return run_frontend(args, options)
    try:
        argv = parse_command(args.backend_cmd)
    except TargetError as exc:
        raise common.UsageError(str(exc)) from None
    stop = threading.Event()
    show, tty = _progress(args.quiet)
    target = Target(argv)
    try:
        campaign = Campaign(args.trace, target, options, progress=show, stop=stop)
    except FuzzInputError as exc:
        target.close()
        common.fail(str(exc))

    report = _run_until_stopped(campaign.run, stop, end_line=tty and not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print("\n".join(render_text(report, verbose=args.verbose)))
    sys.stdout.flush()
    return common.EXIT_FOUND if report.found else common.EXIT_OK


def _run_until_stopped(run: Callable[[], R], stop: threading.Event, end_line: bool) -> R:
    """``run()`` with SIGINT and SIGTERM setting ``stop`` (the campaign ends its iteration
    and reports); a target that cannot be run is a failure of the command."""
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT,
                signal.SIGTERM)}  # fmt: skip
    try:
        return run()
    except TargetError as exc:
        common.fail(str(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if end_line:
            print(file=sys.stderr)  # past the live progress line


def run_frontend(args: argparse.Namespace, options: FuzzOptions) -> int:
    """``--frontend-cmd``: mutated back-end replies to a front-end started each iteration."""
    if args.frontend_wait <= 0:
        raise common.UsageError("--frontend-wait must be positive")
    try:
        argv = parse_command(args.frontend_cmd)
    except TargetError as exc:
        raise common.UsageError(str(exc).replace("--backend-cmd", "--frontend-cmd")) from None
    stop = threading.Event()
    tty = sys.stderr.isatty()

    def line(text: str) -> None:
        if not args.quiet and tty:
            print("\r" + text, end="", file=sys.stderr, flush=True)

    try:
        campaign = FrontendCampaign(
            args.trace, argv, seed=options.seed, start=options.start,
            iterations=options.iterations,
            time_limit=options.time_limit, wait=args.frontend_wait, timeout=options.timeout,
            families=options.families, out=options.out, minimize=options.minimize,
            minimize_tests=args.minimize_tests or FRONTEND_MINIMIZE_TESTS, progress=line,
            stop=stop,
        )  # fmt: skip
    except ReplayInputError as exc:
        common.fail(str(exc))
    report = _run_until_stopped(campaign.run, stop, end_line=tty and not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(f"vhtrace fuzz: {report.trace} served to {' '.join(report.frontend)}")
        rate = report.iterations / report.elapsed if report.elapsed else 0.0
        print(f"seed {report.seed}: {report.iterations} iterations in {report.elapsed:.1f} s "
              f"({rate:.2f}/s, {report.mode} mode); outcomes: {dict(report.kinds)}")  # fmt: skip
        for number, finding in enumerate(report.findings, 1):
            print(f"  {number}. {finding.verdict.kind}: {finding.verdict.detail} "
                  f"(iteration {finding.iteration}, seen {finding.count} time(s))")  # fmt: skip
            for mutation in finding.mutations:
                print(f"     mutation: {mutation}")
            if finding.reproducer:
                print(f"     reproducer: {finding.reproducer} (vhtrace replay REPRO --serve SOCK)")
                again = {True: "yes", False: "no", None: "not tried"}[finding.reproduced]
                print(f"     reproduced on a fresh front-end: {again}")
            if finding.minimized:
                small = finding.minimized
                print(f"     minimized: {small.reproducer} ({small.messages} messages served, "
                      f"{small.tests} tests)")  # fmt: skip
                for mutation in small.mutations:
                    print(f"       mutation: {mutation}")
        found = f"{len(report.findings)} finding(s), exit 1" if report.found else "nothing found"
        print(f"result: {found}" + ("" if report.found else ", exit 0"))
    sys.stdout.flush()
    return common.EXIT_FOUND if report.found else common.EXIT_OK
