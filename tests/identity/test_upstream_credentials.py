"""An agent's credential stays at the gateway: an HTTP upstream sees the credentials
configured for it, on every request it gets, and never the agent's key or anything else
the agent sent to authenticate itself."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import orjson
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from ..support import (
    create_key,
    environ,
    http_upstream,
    loopback_socket,
    serve,
    wait_ready,
    write_config,
    write_policies,
)

pytestmark = pytest.mark.anyio

UPSTREAM_SECRET = "Bearer upstream-own-credential"
ECHO = {
    "name": "echo",
    "description": "Returns its text.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}
CAPS = {"tools": {"listChanged": False}}


@dataclass
class Seen:
    """One HTTP request as the upstream received it."""

    method: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingUpstream:
    """A lean MCP server (JSON answers only; the 2026-07-28 discovery and the initialize
    handshake) that records every request it receives, headers and body."""

    seen: list[Seen] = field(default_factory=list)

    def _result(self, method: str, params: dict[str, Any], modern: bool) -> dict[str, Any] | None:
        if method == "server/discover":
            return {"supportedVersions": ["2026-07-28"], "capabilities": CAPS, "ttlMs": 0, "cacheScope": "public"}
        if method == "initialize":
            return {
                "protocolVersion": "2025-11-25",
                "capabilities": CAPS,
                "serverInfo": {"name": "recording", "version": "1"},
            }
        if method == "tools/list":
            return {"tools": [ECHO], **({"ttlMs": 0, "cacheScope": "public"} if modern else {})}
        if method == "tools/call":
            return {"content": [{"type": "text", "text": (params.get("arguments") or {}).get("text", "")}]}
        if method == "ping":
            return {}
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            chunk = await receive()
            body += chunk.get("body", b"")
            if not chunk.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append(Seen(scope["method"], headers, body))
        if scope["method"] != "POST":
            await self._reply(send, 405, b"", [(b"allow", b"POST")])
            return
        message = orjson.loads(body)
        if "id" not in message:
            await self._reply(send, 202, b"")
            return
        modern = headers.get("mcp-protocol-version") == "2026-07-28"
        result = self._result(message["method"], message.get("params") or {}, modern)
        if result is None:
            error = {"code": -32601, "message": f"Method not found: {message['method']}"}
            reply = {"jsonrpc": "2.0", "id": message["id"], "error": error}
        else:
            if modern:
                result["resultType"] = "complete"
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        extra = [(b"mcp-session-id", secrets.token_hex(8).encode())] if message["method"] == "initialize" else []
        await self._reply(send, 200, orjson.dumps(reply), [(b"content-type", b"application/json"), *extra])

    @staticmethod
    async def _reply(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def recording_upstream() -> AsyncIterator[tuple[str, RecordingUpstream]]:
    """The recording upstream under uvicorn on a random loopback port; its URL and itself."""
    upstream = RecordingUpstream()
    with loopback_socket() as sock:
        server = uvicorn.Server(uvicorn.Config(upstream, lifespan="off", log_level="warning", access_log=False))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(10):
                while not server.started:
                    await anyio.sleep(0.02)
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", upstream
            finally:
                server.should_exit = True


@asynccontextmanager
async def agent_with(url: str, headers: dict[str, str], mode: str) -> AsyncIterator[Client]:
    """An SDK client that sends `headers` on every request to the gateway."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


@pytest.mark.parametrize("protocol", ["handshake", "modern"])
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_upstream_sees_only_its_own_credential(tmp_path: Path, protocol: str, mode: str) -> None:
    write_policies(
        tmp_path / "policies", {"teams": {"alpha": {"rules": [{"id": "alpha-all", "allow": {"servers": ["*"]}}]}}}
    )
    async with recording_upstream() as (upstream_url, upstream):
        config = write_config(
            tmp_path,
            {
                "rec": http_upstream(
                    upstream_url, protocol=protocol, headers={"Authorization": {"$env": "UPSTREAM_AUTH"}}
                )
            },
            auth="keys",
            policies="policies",
        )
        with environ(UPSTREAM_AUTH=UPSTREAM_SECRET):
            async with serve(config) as (url, gw):
                await wait_ready(gw)
                key = await create_key(url, "alpha", "bot")
                cookie = f"session={secrets.token_hex(16)}"
                sent = {
                    "Authorization": f"Bearer {key}",
                    "Cookie": cookie,
                    "X-Api-Key": key,
                    "Proxy-Authorization": f"Bearer {key}",
                }
                async with agent_with(url, sent, mode) as client:
                    tools = {t.name for t in (await client.list_tools()).tools}
                    result = await client.call_tool("rec__echo", {"text": "through the gateway"})

    assert tools == {"rec__echo"}
    assert [block.text for block in result.content] == ["through the gateway"]  # type: ignore[union-attr]
    methods = {orjson.loads(s.body)["method"] for s in upstream.seen if s.body and b'"method"' in s.body}
    assert ("initialize" in methods) == (protocol == "handshake") and "tools/list" in methods
    calls = [s for s in upstream.seen if b'"tools/call"' in s.body]
    assert len(calls) == 1 and b"through the gateway" in calls[0].body
    for request in upstream.seen:
        what = f"{request.method} {request.body[:80]!r}"
        assert request.headers.get("authorization") == UPSTREAM_SECRET, what
        assert "cookie" not in request.headers and "x-api-key" not in request.headers, what
        assert "proxy-authorization" not in request.headers, what
        for name, value in request.headers.items():
            assert key not in value and cookie not in value, f"{what}: header {name}"
        assert key.encode() not in request.body and cookie.encode() not in request.body, what
