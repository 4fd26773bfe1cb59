"""The `mcp-gateway` command.

    serve | stdio | check                       run the gateway, or test a config
    init DIRECTORY                              write the example gateway there
    db upgrade                                  migrate the store
    keys create | list | revoke                 agent API keys
    admin-token create                          admin API tokens
    kill                                        engage a kill switch (through the admin API)
    audit tail | export | verify                read and check the audit log
    audit anchor | prune                        anchor its chains' heads; prune old rows
    policy validate | plan | apply | explain | test | schema

Exit status (the README's "Exit codes" table): 0 success; 1 a check failed (`check`,
`audit verify`, `policy test`, a deny from `policy explain`, an unknown key id) or `audit
prune` refused; 2 a usage or configuration error (the message names the file, the line and what is wrong); 3 the
store could not be reached or read, or `serve` could not start; 130 interrupted; 141
standard output closed early (`| head`). Every failure is one `error:` line per problem,
never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import __version__
from ..errors import ConfigError
from . import admin, audit, init, kill, policy, serve
from .common import StoreUnavailable, leaf

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a tool killed by the closed pipe reports


def _describe(root: argparse.ArgumentParser) -> None:
    """Give each subcommand its one-line help as the description of its own `--help`, and
    let a group named alone (`mcp-gateway policy`) print its commands and exit 2."""
    for action in root._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, child in action.choices.items():
            if child.description is None and helps.get(name):
                child.description = helps[name]
            if any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                child.set_defaults(run=_group_help(child))
            _describe(child)


def _group_help(group: argparse.ArgumentParser) -> Any:
    def run(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_CONFIG

    return run


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mcp-gateway", description="An MCP governance gateway.")
    root.add_argument("--version", action="version", version=f"mcp-gateway {__version__}")
    sub = root.add_subparsers(dest="command", metavar="COMMAND")
    for module in (serve, init, admin, kill, audit, policy):
        module.register(sub)
    root.set_defaults(run=_group_help(root))
    _describe(root)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BaseException as exc:
        return _failed(leaf(exc), exc)


def _failed(error: BaseException, raised: BaseException) -> int:
    """One line per problem on stderr and the exit code for `error`; anything not foreseen
    here is a bug, and keeps its traceback."""
    if isinstance(error, ConfigError):
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if isinstance(error, StoreUnavailable):
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if isinstance(error, BrokenPipeError):
        # The reader went away (`| head`): say nothing more, and keep Python's flush of
        # stdout at exit from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    raise raised
