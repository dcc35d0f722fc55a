"""``vhtrace export TRACE -o out.pcapng``: a trace for Wireshark; ``--lua``: its dissector."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from typing import IO, BinaryIO

from vhtrace.cli import common
from vhtrace.cli.verbs import help_of
from vhtrace.dissect.export import LinkType, export_trace
from vhtrace.dissect.lua import lua_source
from vhtrace.trace.reader import TraceError, TraceReader


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "export",
        help=help_of("export"),
        description="Write every message of a trace to a pcapng file that Wireshark and tshark "
        "read with the vhost-user Lua dissector (print it with --lua). Each packet carries its "
        "session, channel, sender, payload layout, fds and findings as packet comments. A "
        "cut-short trace is exported as far as it goes, with a warning and exit code 2.",
        epilog="Example: vhtrace export t.vht -o t.pcapng && vhtrace export --lua > vhost-user.lua"
        " && tshark -X lua_script:vhost-user.lua -r t.pcapng -Y 'vhost_user.request == 5'",
    )
    parser.add_argument("trace", nargs="?", help="trace file (- for stdin)")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="pcapng file to write (- for stdout)"
    )
    parser.add_argument(
        "--linktype",
        choices=[t.value for t in LinkType],
        default=LinkType.UPPER_PDU.value,
        help="upper-pdu (default): Wireshark's exported-PDU link type 252, found by name with "
        "no setup; user: DLT_USER0 (147), the bare messages",
    )
    parser.add_argument(
        "--lua", action="store_true", help="print the Wireshark Lua dissector and exit"
    )
    parser.set_defaults(run=run)


def _spooled_stdin() -> IO[bytes]:
    """stdin copied to a temporary file: the export reads its input twice."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (read by the caller, closed at exit)
    shutil.copyfileobj(sys.stdin.buffer, spool)
    spool.seek(0)
    return spool


def _check_trace(source: str | IO[bytes]) -> None:
    """Refuse what is not a trace before creating the output file."""
    try:
        TraceReader(source).close()
    except TraceError as exc:
        common.fail(str(exc))


def _output(path: str) -> contextlib.AbstractContextManager[BinaryIO]:
    if path == "-":
        return contextlib.nullcontext(sys.stdout.buffer)
    return open(path, "wb")


def run(args: argparse.Namespace) -> int:
    if args.lua:
        sys.stdout.write(lua_source())
        return common.EXIT_OK
    if not args.trace or not args.output:
        raise common.UsageError("needs a TRACE and -o FILE (or --lua)")
    source: str | IO[bytes] = _spooled_stdin() if args.trace == "-" else args.trace
    _check_trace(source)
    try:
        with _output(args.output) as out:
            result = export_trace(source, out, LinkType(args.linktype))
            out.flush()
    except OSError as exc:
        common.fail(f"{args.output}: {exc.strerror or exc}")
    common.warn(f"{result.packets} messages written to {args.output}")
    if result.problem is not None:
        common.warn(f"{args.trace}: {result.problem} (exported up to there)")
        return common.EXIT_BAD_INPUT
    return common.EXIT_OK
