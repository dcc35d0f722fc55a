"""The ``vhtrace`` command: one sub-command per verb, tshark-like conventions."""

from __future__ import annotations

import argparse
import sys

from vhtrace import __version__
from vhtrace.cli import common, export, memory, record, replay, rings, show, stats

VERBS = (record, show, stats, export, replay, rings, memory)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vhtrace",
        description="Record, inspect and replay vhost-user conversations.",
        epilog="Exit codes: 0 ok, 1 divergence or failure found, 2 bad input or usage.",
    )
    parser.add_argument("--version", action="version", version=f"vhtrace {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except common.UsageError as exc:
        parser.exit(common.EXIT_BAD_INPUT, f"vhtrace {args.verb}: {exc}\n")
    except BrokenPipeError:
        # `vhtrace show t.vht | head`: not an error of ours.
        sys.stderr.close()
        return common.EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
