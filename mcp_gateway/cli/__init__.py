"""The `mcp-gateway` command.

    serve | stdio | check                       run the gateway, or test a config
    db upgrade                                  migrate the store
    keys create | list | revoke                 agent API keys
    admin-token create                          admin API tokens
    audit tail | export | verify                read and check the audit log
    policy validate | plan | apply | explain | test | schema

Exit status: 0 success, 1 a check failed or a runtime failure, 2 a usage or configuration
error (the message names the file, the line and what is wrong).
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import ConfigError
from . import admin, audit, policy, serve

EXIT_CONFIG = 2


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mcp-gateway", description="An MCP governance gateway.")
    root.add_argument("--version", action="version", version=f"mcp-gateway {__version__}")
    sub = root.add_subparsers(dest="command", required=True)
    for module in (serve, admin, audit, policy):
        module.register(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
