"""Running `mcp-gateway policy ...` as an operator would: a real subprocess, with a config
that points at a test's store; and reading back what it wrote to that store."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Any

import anyio

from mcp_gateway.store import open_engine
from mcp_gateway.store import rules as rule_store

from ..support import ROOT, stdio_upstream, write_config

EXAMPLE_BUNDLE = ROOT / "policies"


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str | Path, cwd: Path | None = None) -> Result:
    """`python -m mcp_gateway ARGS`; no MCP_GATEWAY_* variables leak in from the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [sys.executable, "-m", "mcp_gateway", *map(str, args)], check=False, env=env, cwd=cwd
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def store_config(directory: Path, store_url: str) -> Path:
    """A config whose store is `store_url` and which names no policy directory itself."""
    return write_config(directory, {"x": stdio_upstream()}, policies=None, database_url=store_url)


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(dedent(text))
    return path


async def policy_history(store_url: str) -> list[dict[str, Any]]:
    """The store's policy versions, newest first."""
    engine = open_engine(store_url)
    try:
        return await rule_store.policy_history(engine)
    finally:
        await engine.dispose()


async def git(directory: Path, *args: str) -> str:
    with anyio.fail_after(30):
        done = await anyio.run_process(
            ["git", "-C", str(directory), "-c", "user.name=Test", "-c", "user.email=test@example.com", *args]
        )
    return done.stdout.decode().strip()
