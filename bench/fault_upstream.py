"""An MCP server over Streamable HTTP that misbehaves on request, for the isolation and
memory tests and bench/isolation.py. Built on bench/fast_upstream.py's handshake.

Tools:
- `echo(text)`: answers at once (the healthy upstream's call);
- `big(mib, sse=false)`: answers a text result of `mib` MiB, as JSON or as one SSE event;
- `flood(count=0)`: streams progress notifications (log messages when the call carries no
  progress token) as fast as it can, `count` of them, or until `stop_flood` is called when
  `count` is 0; then a last progress equal to the total, then its answer;
- `stop_flood()`: ends the floods running.

    python bench/fault_upstream.py --port 9200
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
from typing import Any

import orjson

try:
    from bench.fast_upstream import answer
except ImportError:  # run as a script
    from fast_upstream import answer  # type: ignore[no-redef]

TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {
        "name": "big",
        "inputSchema": {
            "type": "object",
            "properties": {"mib": {"type": "number"}, "sse": {"type": "boolean"}},
            "required": ["mib"],
        },
    },
    {"name": "flood", "inputSchema": {"type": "object", "properties": {"count": {"type": "integer"}}}},
    {"name": "stop_flood", "inputSchema": {"type": "object"}},
]
BATCH = 500
_stop = asyncio.Event()
_texts: dict[int, bytes] = {}
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _text(size: int) -> bytes:
    if size not in _texts:
        _texts.clear()
        _texts[size] = b"x" * size
    return _texts[size]


async def _big(send: Any, rid: Any, arguments: dict[str, Any]) -> None:
    size = int(float(arguments.get("mib", 1)) * 1024 * 1024)
    pieces = [
        b'{"jsonrpc":"2.0","id":' + orjson.dumps(rid) + b',"result":{"content":[{"type":"text","text":"',
        _text(size),
        b'"}],"isError":false}}',
    ]
    if arguments.get("sse"):
        pieces = [b"event: message\ndata: ", *pieces, b"\n\n"]
        headers = SSE
    else:
        length = str(sum(len(p) for p in pieces)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", length)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for piece in pieces:
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _flood(send: Any, rid: Any, arguments: dict[str, Any], token: Any) -> None:
    count = int(arguments.get("count") or 0)
    await send({"type": "http.response.start", "status": 200, "headers": SSE})
    sent = 0

    def event(progress: int) -> bytes:
        if token is not None:
            params = {"progressToken": token, "progress": progress}
            message = {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}
        else:
            params = {"level": "info", "data": f"flood {progress}"}
            message = {"jsonrpc": "2.0", "method": "notifications/message", "params": params}
        return b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"

    while (count and sent < count) or (not count and not _stop.is_set()):
        n = min(BATCH, count - sent) if count else BATCH
        batch = b"".join(event(sent + i + 1) for i in range(n))
        await send({"type": "http.response.body", "body": batch, "more_body": True})
        sent += n
        await asyncio.sleep(0)
    final = {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": f"flooded {sent}"}]}}
    body = event(sent + 1) + b"event: message\ndata: " + orjson.dumps(final) + b"\n\n"
    await send({"type": "http.response.body", "body": body})


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
    params = message.get("params") or {}
    if message.get("method") == "tools/call":
        name, arguments = params.get("name"), params.get("arguments") or {}
        token = (params.get("_meta") or {}).get("progressToken")
        if name == "big":
            await _big(send, message["id"], arguments)
            return
        if name == "flood":
            _stop.clear()
            await _flood(send, message["id"], arguments, token)
            return
        if name == "stop_flood":
            _stop.set()
    reply = answer(message, modern)
    if reply is not None and message.get("method") == "tools/list":
        reply["result"]["tools"] = TOOLS
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9200)
    args = parser.parse_args()
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    main()
