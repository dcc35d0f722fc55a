"""``vhtrace record``: a transparent recording proxy between a front-end and a back-end."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys

from vhtrace.cli import common
from vhtrace.cli.verbs import help_of
from vhtrace.memory import triggers
from vhtrace.memory.capture import MODES
from vhtrace.memory.recording import SnapshotConfig
from vhtrace.protocol.spec import DeviceType, Side
from vhtrace.record.endpoints import EndpointError, check_path_length
from vhtrace.record.link import RecorderLink
from vhtrace.record.model import DEFAULT_BUSY_POLL
from vhtrace.record.priority import PRIORITIES
from vhtrace.record.recorder import Recorder
from vhtrace.record.relay import Proxy, ProxyConfig
from vhtrace.trace.writer import TraceOutputError, TraceWriter, check_output, make_header


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "record",
        help=help_of("record"),
        description="Sit between a vhost-user front-end (QEMU) and a back-end, relay every "
        "message unchanged, and write what was said to a trace. Either the front-end "
        "connects to us (--listen) and we connect to a listening back-end (--connect), or "
        "the front-end listens (QEMU server=on: --connect-frontend) and the back-end "
        "connects to us (--listen-backend, as DPDK's client mode does).",
    )
    parser.add_argument(
        "--listen",
        metavar="FRONT.sock",
        help="socket the front-end (QEMU chardev path) connects to",
    )
    parser.add_argument("--connect", metavar="BACK.sock", help="the back-end's listening socket")
    parser.add_argument(
        "--connect-frontend",
        metavar="FRONT.sock",
        help="the front-end's listening socket (QEMU server=on)",
    )
    parser.add_argument(
        "--listen-backend", metavar="BACK.sock", help="socket the back-end connects to"
    )
    parser.add_argument(
        "-w",
        "--write",
        required=True,
        metavar="TRACE",
        help="trace file to write: created 0600 once the socket is up; an existing file is "
        "refused without --force, a symlink always; a FIFO waits for its reader; - for stdout",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing trace file (never through a symlink, never one that "
        "another recorder is writing)",
    )
    parser.add_argument("--once", action="store_true", help="exit after the first session")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="drop the connection on a malformed message instead of forwarding it",
    )
    parser.add_argument(
        "--print",
        action="store_true",
        dest="print_messages",
        help="show each message live, as vhtrace show would",
    )
    parser.add_argument(
        "--busy-poll",
        type=float,
        default=DEFAULT_BUSY_POLL * 1e6,
        metavar="US",
        help="after a message, poll this long for the next one before sleeping "
        f"(default {DEFAULT_BUSY_POLL * 1e6:.0f}; 0: always sleep): a reply is then relayed "
        "without a wake-up of the relay, at the cost of CPU while messages flow",
    )
    parser.add_argument(
        "--recorder-priority",
        choices=PRIORITIES,
        default="auto",
        help="the recorder process's CPU priority: auto (default: SCHED_IDLE, so it never "
        "delays the relay or the peers, raised to normal while every CPU is busy and it "
        "falls behind), idle (never raised: it falls behind then) or normal",
    )
    parser.add_argument(
        "--socket-mode",
        default="0600",
        metavar="MODE",
        help="mode of the listening socket (octal, default 0600)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="how long to keep trying to reach the other side (default 30)",
    )
    parser.add_argument(
        "--device",
        choices=[d.value for d in DeviceType],
        help="device type, to name virtio feature bits (default: inferred from the peers' "
        "command lines, e.g. QEMU's -device or DPDK's --vdev, else from the feature bits)",
    )
    snapshots = parser.add_argument_group(
        "shared-memory snapshots",
        "Copy guest memory, vrings and inflight areas into the trace when a trigger fires "
        "(docs/snapshots.md). Pages are stored once per trace, zero pages never.",
    )
    snapshots.add_argument(
        "--snapshot",
        default=triggers.DEFAULT,
        metavar="TRIGGER[,...]",
        help="when: start (a ring starts), stop (GET_VRING_BASE reply), before:NAME, "
        "after:NAME, every:SECONDS, signal (SIGUSR1); default start,stop",
    )
    snapshots.add_argument(
        "--memory",
        choices=MODES,
        default="rings",
        help="what: rings (descriptor tables, avail/used rings, the buffers descriptors "
        "point to; default), full (every region), none (no snapshots)",
    )
    snapshots.add_argument(
        "--snapshot-hold",
        type=float,
        default=1000.0,
        metavar="MS",
        help="the longest a before:NAME message waits for its snapshot (default 1000)",
    )
    parser.set_defaults(run=run)  # fmt: skip


def _snapshots(args: argparse.Namespace) -> SnapshotConfig:
    try:
        wanted = triggers.parse(args.snapshot)
    except triggers.TriggerError as exc:
        raise common.UsageError(f"--snapshot {exc}") from None
    if not args.snapshot_hold >= 0:
        raise common.UsageError("--snapshot-hold: expected a number of milliseconds")
    return SnapshotConfig(wanted, args.memory, hold_seconds=args.snapshot_hold / 1000)


MAX_SOCKET_MODE = 0o777


def parse_socket_mode(text: str) -> int:
    """An octal permission mode 0..0777 (``600``, ``0660``, ``0o600``); UsageError otherwise."""
    digits = text[2:] if text[:2].lower() == "0o" else text
    if not re.fullmatch(r"[0-7]{1,4}", digits) or int(digits, 8) > MAX_SOCKET_MODE:
        raise common.UsageError(
            f"--socket-mode {text}: expected an octal mode from 0 to 0777 "
            f"(no setuid, setgid or sticky bits), got {text!r}"
        )
    return int(digits, 8)


MAX_BUSY_POLL_US = 100_000
"""More than 100 ms of polling is a spinning process, not a saved wake-up."""


def _config(args: argparse.Namespace, snapshots: SnapshotConfig) -> ProxyConfig:
    mode = parse_socket_mode(args.socket_mode)
    if not 0 <= args.busy_poll <= MAX_BUSY_POLL_US:
        raise common.UsageError(f"--busy-poll: 0 to {MAX_BUSY_POLL_US} microseconds")
    if args.write == "-" and args.print_messages:
        raise common.UsageError("--print writes to stdout, and so does -w -: give a trace file")
    for option in ("listen", "connect", "connect_frontend", "listen_backend"):
        path = getattr(args, option)
        if path:
            try:
                check_path_length(path, "--" + option.replace("_", "-"))
            except EndpointError as exc:
                raise common.UsageError(str(exc)) from None
    if args.listen and args.connect and not (args.connect_frontend or args.listen_backend):
        front, back, side = args.listen, args.connect, Side.FRONTEND
    elif args.connect_frontend and args.listen_backend and not (args.listen or args.connect):
        front, back, side = args.connect_frontend, args.listen_backend, Side.BACKEND
    else:
        raise common.UsageError(
            "give either --listen FRONT.sock --connect BACK.sock, or "
            "--connect-frontend FRONT.sock --listen-backend BACK.sock"
        )
    return ProxyConfig(front, back, side, socket_mode=mode,
                       connect_timeout=args.connect_timeout, once=args.once,
                       strict=args.strict,
                       hold=snapshots.triggers if snapshots.active else None,
                       hold_seconds=snapshots.hold_seconds, device=args.device,
                       busy_poll=args.busy_poll / 1e6)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    snapshots = _snapshots(args)
    config = _config(args, snapshots)
    header = make_header(
        device=args.device,
        endpoints={"frontend": config.frontend_path, "backend": config.backend_path},
        topology="frontend-connects" if config.listen_side is Side.FRONTEND
        else "backend-connects",
        options={"strict": args.strict, "once": args.once, **snapshots.describe()},
    )  # fmt: skip
    try:
        check_output(args.write, overwrite=args.force)  # refused before any socket is made
    except TraceOutputError as exc:
        common.fail(str(exc))
    # The file is created only once the socket is up: a failed start leaves none behind.
    writer = TraceWriter(args.write, header, overwrite=args.force, open_now=False)
    device = DeviceType(args.device) if args.device else None
    recorder = RecorderLink(
        Recorder(
            writer,
            device,
            snapshots=snapshots,
            print_to=sys.stdout if args.print_messages else None,
        ),
        priority=args.recorder_priority,
    )
    try:
        proxy = Proxy(config, recorder)
    except EndpointError as exc:
        common.fail(str(exc))
    try:
        writer.open(announce=common.warn)
    except (TraceOutputError, OSError, KeyboardInterrupt) as exc:
        proxy.request_stop()
        proxy.run()  # stops at once: closes and removes the listening socket
        if isinstance(exc, KeyboardInterrupt):
            raise SystemExit(130) from None
        if isinstance(exc, TraceOutputError):
            common.fail(str(exc))
        common.fail(f"{args.write}: cannot write: {exc.strerror or exc}")

    def stop(signum: int, frame: object) -> None:
        proxy.request_stop()

    def snapshot_now(signum: int, frame: object) -> None:
        recorder.request_snapshot("signal")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    if snapshots.active and snapshots.triggers.signal:
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, snapshot_now)
    recorder.start()  # its own process: the relay's process does nothing but relay
    other = config.backend_path if config.listen_side is Side.FRONTEND else config.frontend_path
    where = (
        f"listening on {proxy.listen_path} for the {config.listen_side.value}, "
        f"{config.listen_side.peer.value} at {other}"
    )
    common.warn(f"recording: {where}; writing {args.write}")
    if not os.path.exists(other):
        common.warn(
            f"{other}: no such socket yet (the {config.listen_side.peer.value} is not "
            f"listening); each session waits {config.connect_timeout:g} s for it"
        )
    try:
        proxy.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        recorder.stop()
    common.warn(recorder.stats.summary_line(args.write))
    if recorder.failed or recorder.stats.failed_sessions:
        return common.EXIT_FOUND
    return common.EXIT_OK
