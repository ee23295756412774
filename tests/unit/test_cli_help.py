"""The command line explains itself: every subcommand says what it writes, every flag has
help, and every optional flag says what it is when not given."""

import argparse

import pytest

from sasrec.cli import HelpWithDefaults, build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (choices,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return choices.choices


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_flag_has_help_and_says_its_default(name):
    command = subcommands()[name]
    assert "Writes " in command.description
    formatter = HelpWithDefaults(prog=f"sasrec {name}")
    one_required = [
        a for g in command._mutually_exclusive_groups if g.required for a in g._group_actions
    ]
    for action in command._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        if action.help == argparse.SUPPRESS:  # internal: how the pipeline passes a trial on
            continue
        assert action.help, f"sasrec {name} {action.option_strings[0]} has no help"
        if (
            action.required
            or action in one_required
            or isinstance(action, argparse._StoreTrueAction)
        ):
            continue
        shown = formatter._get_help_string(action) % {"default": action.default}
        assert "default" in shown, f"sasrec {name} {action.option_strings[0]}: {shown}"


def test_defaults_are_shown_in_the_help_text():
    help_text = subcommands()["run"].format_help()
    assert "(default: outputs)" in help_text
    assert "(default: 5)" in help_text  # --kcore
    assert "amazon2023:<Category>:<0core|5core>[/<split>]" in help_text
