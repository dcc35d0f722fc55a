"""The comparison options replay and diff share: parsed the same for both verbs."""

from __future__ import annotations

import argparse

import pytest

from vhtrace.cli.main import build_parser
from vhtrace.cli.matching import add_rule_arguments


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_rule_arguments(parser.add_argument_group("comparison"))
    return parser.parse_args(argv)


def test_defaults_compare_with_the_default_ignores() -> None:
    args = parse([])
    assert (args.ignore, args.mask_features, args.no_default_ignores, args.device) == (
        [],
        [],
        False,
        None,
    )


def test_ignore_and_mask_features_repeat() -> None:
    args = parse(["--ignore", "GET_CONFIG.region", "--ignore", "fds", "--mask-features", "0x3",
                  "--mask-features", "protocol:REPLY_ACK", "--no-default-ignores",
                  "--device", "blk"])  # fmt: skip
    assert args.ignore == ["GET_CONFIG.region", "fds"]
    assert args.mask_features == ["0x3", "protocol:REPLY_ACK"]
    assert args.no_default_ignores and args.device == "blk"


def test_an_unknown_device_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["--device", "toaster"])
    assert exited.value.code == 2


@pytest.mark.parametrize("verb", ["replay", "diff"])
def test_replay_and_diff_both_take_them(verb: str) -> None:
    parser = build_parser(verb)
    help_text = parser._subparsers._group_actions[0].choices[verb].format_help()  # type: ignore[union-attr]
    for option in ("--ignore", "--mask-features", "--no-default-ignores", "--device"):
        assert option in help_text
