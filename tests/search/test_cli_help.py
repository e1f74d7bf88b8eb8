"""`--help` explains every option of every verb, with its default where it has one."""

from __future__ import annotations

import argparse

import pytest

from search.cli import COMMANDS, build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_option_has_help_and_shows_its_default(verb):
    sub = _subparsers()[verb]
    text = " ".join(sub.format_help().split())
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        name = action.option_strings[-1]
        assert action.help, f"{verb} {name} has no help text"
        default = action.default
        if any(default is v for v in (None, True, False)):
            continue  # flags and "not set": nothing to show
        shown = f"(default: {default})" in text or "default" in action.help
        assert shown, f"{verb} {name}: default {default!r} not shown in --help"


def test_zero_and_one_defaults_are_shown():
    """0 == False and 1 == True in Python: such defaults must still be printed."""
    help_text = " ".join(_subparsers()["run"].format_help().split())
    assert "(default: 0)" in help_text  # --seed
    assert "(default: 1.0)" in help_text  # --cpus-per-trial
