"""The official MCP conformance suite, run against the gateway with the example everything
server behind it under its own names (`namespace: ""`): whatever the suite checks of a
server, the gateway must pass while proxying it.

The suite is an npm package, run by the repository's `scripts/mcp-conformance` (which
installs the pinned version into a cache on first use; override the runner's path with
`MCP_CONFORMANCE`). It is part of CI: a missing Node.js is a failure, not a skip.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from .support import ROOT, serve, stdio_upstream, wait_ready, write_config

pytestmark = pytest.mark.anyio

EXPECTED = "Total: 40 passed, 0 failed"
TAIL_LINES = 60


def conformance_tool() -> Path:
    override = os.environ.get("MCP_CONFORMANCE")
    return Path(override) if override else ROOT / "scripts" / "mcp-conformance"


def run_suite(tool: Path, url: str) -> str:
    """Run the suite to completion (blocking: call it from a worker thread); returns its output."""
    completed = subprocess.run(
        [str(tool), "server", "--url", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,  # the first run installs the suite from npm
        check=False,
    )
    return completed.stdout


async def test_gateway_passes_the_official_conformance_suite_with_the_everything_server_behind_it(
    tmp_path: Path,
) -> None:
    tool = conformance_tool()
    assert tool.is_file() and os.access(tool, os.X_OK), (
        f"the MCP conformance runner is missing or not executable at {tool}; "
        "set MCP_CONFORMANCE to its path (it needs node and npm)"
    )
    config = write_config(tmp_path, {"everything": stdio_upstream(namespace="")})
    async with serve(config) as (url, gateway):
        await wait_ready(gateway)
        output = await anyio.to_thread.run_sync(run_suite, tool, url)
    tail = "\n".join(output.splitlines()[-TAIL_LINES:])
    assert EXPECTED in output, f"expected {EXPECTED!r}; the suite's output ends:\n{tail}"
