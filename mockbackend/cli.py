"""``mockbackend``: run the mock back-end from the command line.

    mockbackend --socket PATH --device blk --disk FILE [--script S.py]
    mockbackend --socket PATH --connect --device rng          # QEMU listens

Exit codes: 0 ok (also when stopped by SIGINT or SIGTERM); 1 an expectation failed, or
violations were found and ``--fail-on-violations`` was given; 2 bad usage, or a script
that does not load or raises.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mockbackend.devices import BlkDevice, Device, NetLoopback, RngDevice
from mockbackend.script import Script, ScriptError, load_script_file
from mockbackend.server import MockBackend

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mockbackend",
        description="A scriptable, strict vhost-user back-end (virtio-blk on a file, virtio-rng).",
        epilog="SIGINT (Ctrl-C) and SIGTERM stop it cleanly, also when started in the "
        "background: the connection is ended, reports printed (and written), the socket "
        "removed. Exit codes: 0 ok (also when stopped by a signal), 1 expectation failed or "
        "violations found (with --fail-on-violations), 2 bad usage or a script that does "
        "not load or raises.",
    )
    parser.add_argument("--socket", required=True, type=Path, help="unix socket path")
    parser.add_argument(
        "--connect", action="store_true", help="connect to a listening front-end (QEMU server=on)"
    )
    parser.add_argument("--device", choices=("blk", "net", "rng"), default="blk")
    parser.add_argument("--disk", type=Path, help="image file of the blk device")
    parser.add_argument("--readonly", action="store_true", help="blk: a read-only disk")
    parser.add_argument("--queues", type=int, default=1, help="blk: number of request queues")
    parser.add_argument("--script", type=Path, help="Python file defining configure(script)")
    parser.add_argument(
        "--postcopy",
        action="store_true",
        help="offer PAGEFAULT (and drop CONFIGURE_MEM_SLOTS, which QEMU 7.2 breaks postcopy with)",
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=1,
        help="connections to serve before exiting and removing the socket (0: until "
        "stopped by SIGINT/SIGTERM); default 1. A front-end that reconnects (QEMU "
        "-chardev ...,reconnect=N) needs 0, or one more per reconnection",
    )
    parser.add_argument("--fail-on-violations", action="store_true")
    parser.add_argument("--report", type=Path, help="write the reports as JSON here")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no line per fault fired, no note when the session count is reached",
    )
    return parser


def _device(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Device:
    if args.device == "blk":
        if args.disk is None:
            parser.error("--device blk needs --disk FILE")
        if not args.disk.is_file():
            parser.error(f"--disk {args.disk}: no such file")
        if args.queues < 1:
            parser.error("--queues must be at least 1")
        return BlkDevice(args.disk, readonly=args.readonly, num_queues=args.queues)
    if args.device == "net":
        return NetLoopback()
    return RngDevice()


class _Stopper:
    """SIGINT and SIGTERM handlers, installed at start (a shell starts background jobs
    with SIGINT ignored): they stop the back-end, which then ends like a finished run."""

    def __init__(self) -> None:
        self.backend: MockBackend | None = None
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]

    def attach(self, backend: MockBackend) -> None:
        self.backend = backend
        if self.signal is not None:
            backend.stop(timeout=0, reason=self.reason())

    def reason(self) -> str:
        return f"stopped by {signal.Signals(self.signal).name}" if self.signal else "stopped"

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal = signum
        if self.backend is not None:
            self.backend.stop(timeout=0, reason=self.reason())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    stopper = _Stopper()
    stopper.install()
    try:
        return _run(args, parser, stopper)
    finally:
        stopper.restore()


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, stopper: _Stopper) -> int:
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="mockbackend: %(message)s", stream=sys.stderr)
    logging.getLogger("mockbackend.faults").setLevel(
        logging.WARNING if args.quiet else logging.INFO
    )
    if args.sessions < 0:
        print(f"mockbackend: --sessions {args.sessions}: expected 0 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        device = _device(args, parser)
    except SystemExit:
        return EXIT_USAGE
    except OSError as exc:
        print(f"mockbackend: {exc}", file=sys.stderr)
        return EXIT_USAGE
    script = Script(device)
    if args.postcopy:
        script.postcopy()
    if args.script is not None:
        try:
            script = load_script_file(args.script, script)
        except ScriptError as exc:
            print(f"mockbackend: --script {exc}", file=sys.stderr)
            device.close()
            return EXIT_USAGE
    backend = MockBackend(script)
    stopper.attach(backend)
    try:
        backend.serve(args.socket, client=args.connect, sessions=args.sessions or None)
    except OSError as exc:
        print(f"mockbackend: {args.socket}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        device.close()
    reports = backend.reports
    for report in reports:
        print(report.render(), file=sys.stderr)
    if args.report is not None:
        args.report.write_text(json.dumps([r.to_dict() for r in reports], indent=2))
    if backend.stopped:
        print(f"mockbackend: {stopper.reason()}; {args.socket} removed", file=sys.stderr)
    elif args.sessions and not args.connect and not args.quiet:
        print(
            f"mockbackend: served {backend.sessions_done} of --sessions {args.sessions}: "
            f"exiting, {args.socket} removed (a front-end that reconnects needs --sessions 0)",
            file=sys.stderr,
        )
    if any(r.script_errors for r in reports):
        return EXIT_USAGE
    ok = all(r.ok(args.fail_on_violations) for r in reports)
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
