"""A minimal stdio MCP server for tests: its `record` tool appends each call to the file
named by RECORDER_LOG, so a test can tell exactly which calls reached the upstream."""

from __future__ import annotations

import os

from mcp.server import MCPServer

server = MCPServer("recorder")


@server.tool()
def record(text: str) -> str:
    with open(os.environ["RECORDER_LOG"], "a", encoding="utf-8") as log:
        log.write(text + "\n")
    return f"recorded {text}"


if __name__ == "__main__":
    server.run("stdio")
