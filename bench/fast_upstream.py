"""A deliberately lean MCP server for benchmarks: its `tools/call` costs well under a
millisecond, so what a benchmark measures through the gateway is the gateway.

It speaks just enough MCP for a gateway or a client to use it: 2026-07-28 (`server/discover`
and self-contained requests) and the handshake (`initialize` with a session id), answering
every request with plain JSON. One tool, `echo`, returns its `text` argument.

    python bench/fast_upstream.py --port 9100          # Streamable HTTP at /mcp
    python bench/fast_upstream.py --stdio               # one JSON-RPC message per line
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import sys
from typing import Any

import orjson

TOOL = {
    "name": "echo",
    "description": "Returns its text.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}
CAPS = {"tools": {"listChanged": False}}


def answer(message: dict[str, Any], modern: bool) -> dict[str, Any] | None:
    method = message.get("method")
    if "id" not in message:
        return None
    rid = message["id"]
    params = message.get("params") or {}
    if method == "tools/call":
        text = (params.get("arguments") or {}).get("text", "")
        result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    elif method == "tools/list":
        result = {"tools": [TOOL]}
        if modern:
            result.update(ttlMs=0, cacheScope="public")
    elif method == "server/discover":
        result = {"supportedVersions": ["2026-07-28"], "capabilities": CAPS, "ttlMs": 0, "cacheScope": "public"}
    elif method == "initialize":
        result = {"protocolVersion": "2025-11-25", "capabilities": CAPS, "serverInfo": {"name": "fast", "version": "1"}}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"Method not found: {method}"}}
    if modern:
        result["resultType"] = "complete"
    return {"jsonrpc": "2.0", "id": rid, "result": result}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"POST")]})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        chunk = await receive()
        body += chunk.get("body", b"")
        if not chunk.get("more_body"):
            break
    message = orjson.loads(body)
    headers = dict(scope["headers"])
    modern = headers.get(b"mcp-protocol-version") == b"2026-07-28"
    reply = answer(message, modern)
    extra = []
    if message.get("method") == "initialize":
        extra.append((b"mcp-session-id", secrets.token_hex(8).encode()))
    if reply is None:
        await send({"type": "http.response.start", "status": 202, "headers": extra})
        await send({"type": "http.response.body", "body": b""})
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"), *extra]}
    )
    await send({"type": "http.response.body", "body": orjson.dumps(reply)})


async def stdio() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    modern = False
    while line := await reader.readline():
        message = orjson.loads(line)
        meta = (message.get("params") or {}).get("_meta") or {}
        modern = modern or meta.get("io.modelcontextprotocol/protocolVersion") == "2026-07-28"
        reply = answer(message, modern)
        if reply is not None:
            sys.stdout.buffer.write(orjson.dumps(reply) + b"\n")
            sys.stdout.buffer.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--stdio", action="store_true")
    args = parser.parse_args()
    if args.stdio:
        asyncio.run(stdio())
        return
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    main()
