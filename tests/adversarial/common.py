"""What the adversarial tests share: a gateway with API keys and an admin token on
loopback, an allowed principal's key, and raw JSON-RPC over HTTP for what an SDK client
would never send."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from ..support import environ, serve, stdio_upstream, wait_ready, write_config, write_policies

ADMIN_TOKEN = "adversarial-admin-token-0123456789"
MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
NAME_HEADER = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri", "tasks/get": "taskId"}
POLICY = {"teams": {"alpha": {"rules": [{"id": "alpha-x", "allow": {"servers": ["x"]}}]}}}


@dataclass
class Deployment:
    url: str
    base: str

    def admin(self, token: str | None = ADMIN_TOKEN) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx2.AsyncClient(base_url=self.base + "/admin/api", headers=headers, timeout=30)

    async def key(self, team: str = "alpha") -> tuple[str, str]:
        """A new principal of `team` with a key: (principal id, key)."""
        name = f"bot-{uuid.uuid4().hex[:12]}"
        async with self.admin() as admin:
            made = await admin.post("/keys", json={"team": team, "name": name})
        assert made.status_code == 201, made.text
        return f"{team}/{name}", str(made.json()["key"])


@asynccontextmanager
async def deployment(tmp_path: Path, **gateway: Any) -> AsyncIterator[Deployment]:
    """`auth: keys`, an admin token, one stdio upstream `x` that team alpha may use."""
    write_policies(tmp_path / "policies", POLICY)
    settings: dict[str, Any] = {
        "auth": "keys",
        "policies": "policies",
        "admin_token": {"$env": "ADVERSARIAL_ADMIN_TOKEN"},
        **gateway,
    }
    config = write_config(tmp_path, {"x": stdio_upstream()}, **settings)
    with environ(ADVERSARIAL_ADMIN_TOKEN=ADMIN_TOKEN):
        async with serve(config) as (url, running):
            await wait_ready(running)
            yield Deployment(url, url.rsplit("/mcp", 1)[0])


class Rpc:
    """One client speaking raw JSON-RPC to /mcp, in either protocol era."""

    def __init__(self, http: httpx2.AsyncClient, key: str, mode: str) -> None:
        self.http, self.key, self.mode = http, key, mode
        self.session: str | None = None
        self._ids = 0

    def headers(self, method: str | None = None, params: dict[str, Any] | None = None) -> dict[str, str]:
        headers = {
            "authorization": f"Bearer {self.key}",
            "content-type": "application/json",
            "accept": "application/json",
        }
        if self.mode == MODERN:
            headers["mcp-protocol-version"] = MODERN
            if method is not None:
                headers["mcp-method"] = method
                name = (params or {}).get(NAME_HEADER.get(method, ""))
                if isinstance(name, str):
                    headers["mcp-name"] = name
        elif self.session is not None:
            headers["mcp-session-id"] = self.session
            headers["mcp-protocol-version"] = HANDSHAKE
        return headers

    async def open(self) -> None:
        if self.mode == MODERN:
            return
        init = {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
        response = await self.send_raw(self.body("initialize", init))
        assert response.status_code == 200, response.text
        self.session = response.headers["mcp-session-id"]
        await self.send_raw(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())

    def body(self, method: str, params: dict[str, Any], meta: dict[str, Any] | None = None) -> bytes:
        self._ids += 1
        if self.mode == MODERN:
            params = {**params, "_meta": {PROTOCOL_VERSION: MODERN, CLIENT_CAPABILITIES: {}, **(meta or {})}}
        return json.dumps({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}).encode()

    async def send_raw(self, body: bytes, method: str | None = None, params: Any = None) -> httpx2.Response:
        return await self.http.post("/mcp", content=body, headers=self.headers(method, params))

    async def request(self, method: str, params: dict[str, Any], **meta: Any) -> httpx2.Response:
        return await self.send_raw(self.body(method, params, meta), method, params)


@asynccontextmanager
async def rpc(deployment: Deployment, key: str, mode: str) -> AsyncIterator[Rpc]:
    async with httpx2.AsyncClient(base_url=deployment.base, timeout=30) as http:
        client = Rpc(http, key, mode)
        await client.open()
        yield client


def error_of(response: httpx2.Response) -> dict[str, Any]:
    body = response.json()
    assert "error" in body, body
    return body["error"]  # type: ignore[no-any-return]


DEEP = "__deep__"


def with_nesting(body: bytes, depth: int) -> bytes:
    """`body` with the string `DEEP` replaced by a value `depth` arrays deep (built as
    text: the json module cannot encode it)."""
    return body.replace(f'"{DEEP}"'.encode(), b"[" * depth + b'"bottom"' + b"]" * depth)
