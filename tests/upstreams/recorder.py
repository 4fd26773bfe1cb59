"""A minimal MCP server for tests: its `record` tool appends each call to the file named by
RECORDER_LOG, so a test can tell exactly which calls reached the upstream; its `trace` tool
appends the W3C trace context the call arrived with (`_meta.traceparent` and, over HTTP,
the `traceparent` header) as one JSON line. With RECORDER_GATE set, it says nothing until
that file exists: an upstream slow to come up, for as long as a test wants.

    python recorder.py                # stdio
    python recorder.py --http PORT    # Streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

server = MCPServer("recorder")


def _append(line: str) -> None:
    with open(os.environ["RECORDER_LOG"], "a", encoding="utf-8") as log:
        log.write(line + "\n")


@server.tool()
def record(text: str) -> str:
    _append(text)
    return f"recorded {text}"


@server.tool()
def trace(ctx: Context) -> str:
    request_context = ctx.request_context
    meta: Any = request_context.meta or {}
    if not isinstance(meta, dict):
        meta = meta.model_dump(by_alias=True) if hasattr(meta, "model_dump") else dict(meta)
    request = request_context.request
    header = request.headers.get("traceparent") if request is not None and hasattr(request, "headers") else None
    _append(json.dumps({"meta": meta.get("traceparent"), "header": header}))
    return "traced"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        import uvicorn

        uvicorn.run(server.streamable_http_app(host="127.0.0.1"), host="127.0.0.1", port=int(sys.argv[2]))
    else:
        gate = os.environ.get("RECORDER_GATE")
        while gate is not None and not os.path.exists(gate):
            time.sleep(0.02)
        server.run("stdio")
