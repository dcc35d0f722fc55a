"""The table of verbs: every verb's module exists and registers a runnable sub-command."""

from __future__ import annotations

import argparse
import importlib

import pytest

from vhtrace.cli.verbs import VERBS, help_of


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_each_verb_module_adds_its_parser_with_a_run(verb: str) -> None:
    module = importlib.import_module(VERBS[verb][0])
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers(dest="verb"))
    sub = parser._subparsers._group_actions[0].choices[verb]  # type: ignore[union-attr]
    assert callable(sub.get_default("run"))


def test_help_is_one_line_per_verb() -> None:
    for verb in VERBS:
        text = help_of(verb)
        assert text and "\n" not in text and text == VERBS[verb][1]
    with pytest.raises(KeyError):
        help_of("nonsense")
