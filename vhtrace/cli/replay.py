"""``vhtrace replay``: play one side of a trace against a live peer; exit 1 on divergence."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from vhtrace.cli import common
from vhtrace.cli.matching import add_rule_arguments
from vhtrace.cli.verbs import help_of
from vhtrace.replay import formats
from vhtrace.replay.backend import serve_backend
from vhtrace.replay.frontend import replay_frontend
from vhtrace.replay.options import UNKNOWN_POLICIES, ReplayOptions
from vhtrace.replay.report import ReplayResult, render_text

FRONTEND_TIMEOUT = 5.0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "replay",
        help=help_of("replay"),
        description="Play the recorded front-end against a live back-end (--backend), or the "
        "recorded back-end to a live front-end (--serve, --serve-connect), and compare what "
        "the live peer says with the recording. Exit 0 same, 1 diverged, 2 unusable input.",
    )
    parser.add_argument("trace", help="trace file")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--backend", metavar="SOCK", help="play the front-end: connect to this back-end socket"
    )
    where.add_argument(
        "--serve",
        metavar="SOCK",
        help="play the back-end: listen here for the front-end (QEMU's chardev path)",
    )
    where.add_argument(
        "--serve-connect",
        metavar="SOCK",
        help="play the back-end: connect to a front-end that listens (QEMU server=on)",
    )
    match = parser.add_argument_group("matching")
    add_rule_arguments(match)
    match.add_argument(
        "--loose",
        action="store_true",
        help="serving: match requests by request and payload instead of strict order",
    )
    match.add_argument(
        "--unknown",
        choices=UNKNOWN_POLICIES,
        default="fail",
        help="serving: a request the trace does not have is a divergence "
        "(fail, default), gets a plausible success reply (ack), or is answered "
        "by a real back-end (forward, with --forward)",
    )
    match.add_argument("--forward", metavar="SOCK", help="the real back-end for --unknown forward")
    match.add_argument(
        "--keep-going",
        action="store_true",
        help="after a content divergence, go on and report every difference",
    )
    play = parser.add_argument_group("what to play")
    play.add_argument(
        "--session",
        type=int,
        action="append",
        metavar="N",
        help="replay only this session (repeatable)",
    )
    play.add_argument("--until", type=int, metavar="N", help="stop after message number N")
    play.add_argument(
        "--realtime",
        action="store_true",
        help="keep the recorded gaps (default: as fast as possible)",
    )
    play.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help=f"longest wait for an expected message (default {FRONTEND_TIMEOUT:g} "
        "s as the front-end, no limit when serving)",
    )
    play.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="how long to keep trying to reach the peer (default 10)",
    )
    play.add_argument(
        "--close-timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="how long to wait for the peer to close when the recording says it did (default 2)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="the result as one JSON object")
    out.add_argument("--report", metavar="FILE", help="write the result as JUnit XML")
    out.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="every check, the differences ignored, the live findings",
    )
    parser.set_defaults(run=run)


def _options(args: argparse.Namespace, serving: bool) -> ReplayOptions:
    if args.forward and args.unknown != "forward":
        raise common.UsageError("--forward is for --unknown forward")
    if not serving and (args.loose or args.unknown != "fail"):
        raise common.UsageError("--loose and --unknown are for --serve / --serve-connect")
    for name in ("timeout", "connect_timeout", "close_timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise common.UsageError(f"--{name.replace('_', '-')} must be positive")
    timeout = args.timeout if args.timeout is not None else (None if serving else FRONTEND_TIMEOUT)
    return ReplayOptions(
        ignore=tuple(args.ignore),
        mask_features=tuple(args.mask_features),
        default_ignores=not args.no_default_ignores,
        until=args.until,
        sessions=tuple(args.session) if args.session else None,
        realtime=args.realtime,
        timeout=timeout,
        connect_timeout=args.connect_timeout,
        close_timeout=args.close_timeout,
        keep_going=args.keep_going,
        loose=args.loose,
        unknown=args.unknown,
        forward=args.forward,
        device=args.device,
    )


def run(args: argparse.Namespace) -> int:
    serving = args.backend is None
    options = _options(args, serving)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.backend is not None:
            result = replay_frontend(args.trace, args.backend, options, stop=stop)
        else:
            path = args.serve or args.serve_connect

            def ready(where: str) -> None:
                how = "listening on" if args.serve else "connecting to"
                common.warn(f"replay: serving {args.trace} as the back-end, {how} {where}")

            result = serve_backend(
                args.trace, path, options, connect=args.serve is None, stop=stop, on_ready=ready
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _output(args, result)
    return result.exit_code


def _output(args: argparse.Namespace, result: ReplayResult) -> None:
    if args.report:
        try:
            Path(args.report).write_text(formats.to_junit(result))
        except OSError as exc:
            common.warn(f"--report {args.report}: {exc.strerror}")
    if args.json:
        print(formats.to_json(result))
    else:
        print("\n".join(render_text(result, verbose=args.verbose)))
    if result.error is not None:
        common.warn(result.error)
    sys.stdout.flush()
