"""The ``vhtrace`` command: one sub-command per verb, tshark-like conventions."""

from __future__ import annotations

import argparse
import importlib
import sys

from vhtrace import __version__
from vhtrace.cli import common
from vhtrace.cli.verbs import VERBS


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that verb's options are loaded (the others are
    listed, so that help and errors still name them)."""
    parser = argparse.ArgumentParser(
        prog="vhtrace",
        description="Record, inspect and replay vhost-user conversations.",
        epilog="Exit codes: 0 ok, 1 divergence or failure found, 2 bad input or usage.",
    )
    parser.add_argument("--version", action="version", version=f"vhtrace {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, (module, help_text) in VERBS.items():
        if only is None or name == only:
            importlib.import_module(module).add_parser(verbs)
        else:
            verbs.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(verb if verb in VERBS else None)
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
