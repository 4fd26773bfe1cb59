"""A minimal stdio MCP server for tests: its `record` tool appends each call to the file
named by RECORDER_LOG, so a test can tell exactly which calls reached the upstream. With RECORDER_GATE set, it
says nothing until that file exists: an upstream slow to come up, for as long as a test
wants."""

from __future__ import annotations

import os
import time

from mcp.server import MCPServer

server = MCPServer("recorder")


@server.tool()
def record(text: str) -> str:
    with open(os.environ["RECORDER_LOG"], "a", encoding="utf-8") as log:
        log.write(text + "\n")
    return f"recorded {text}"


if __name__ == "__main__":
    gate = os.environ.get("RECORDER_GATE")
    while gate is not None and not os.path.exists(gate):
        time.sleep(0.02)
    server.run("stdio")
