"""`--help` answers every question: each subcommand has a description, each option and
positional says what it takes (and lists its allowed values), and no help names a flag
that does not exist."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

from mcp_gateway.cli import parser


def _commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield " ".join((*path, name)), child
                yield from _commands(child, (*path, name))


def test_every_subcommand_has_a_description() -> None:
    missing = [name for name, child in _commands(parser()) if not child.description]
    assert missing == []


def test_every_option_and_positional_says_what_it_takes() -> None:
    silent = [
        f"{name}: {action.option_strings or action.dest}"
        for name, child in _commands(parser())
        for action in child._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction) and not action.help
    ]
    assert silent == []


def test_options_with_allowed_values_list_them_in_their_help() -> None:
    root = parser()
    unlisted = [
        f"{name}: {action.option_strings}"
        for name, child in _commands(root)
        for action in child._actions
        if action.choices and not isinstance(action, argparse._SubParsersAction)
        if not all(str(choice) in child.format_help() for choice in action.choices)
    ]
    assert unlisted == []
    tail = dict(_commands(root))["audit tail"]
    choices = {a.dest: a.choices for a in tail._actions}
    assert choices["decision"] == ("allow", "deny")
    assert choices["kind"] == ("decision", "completion", "admin", "auth", "end")


def test_no_help_names_a_flag_its_command_does_not_have() -> None:
    wrong = []
    for name, child in _commands(parser()):
        flags = {flag for action in child._actions for flag in action.option_strings}
        for action in child._actions:
            for named in re.findall(r"(?<![\w-])--[a-z][a-z-]*", action.help or ""):
                if named not in flags:
                    wrong.append(f"{name} {action.option_strings}: names {named}")
    assert wrong == []
