"""What a handshake session holds, and for how long: a session whose client sent nothing
after `initialize` is closed after `session_handshake_timeout` (not `session_idle_timeout`),
counting against its principal's quota until then; a session keeps only the capabilities
the gateway relays and a bounded `clientInfo`, not whatever the client sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.protocol import INVALID_PARAMS
from mcp_gateway.proxy.session import MAX_CAPABILITY_BYTES, MAX_CLIENT_INFO

from ..support import serve, write_config

pytestmark = pytest.mark.anyio

HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
VERSION = "2025-11-25"


def initialize(capabilities: Any = None, client_info: Any = None) -> bytes:
    params = {
        "protocolVersion": VERSION,
        "capabilities": {} if capabilities is None else capabilities,
        "clientInfo": {"name": "t", "version": "1"} if client_info is None else client_info,
    }
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}).encode()


async def post(http: httpx2.AsyncClient, url: str, body: Any, session: str | None = None) -> httpx2.Response:
    headers = dict(HEADERS)
    if session is not None:
        headers |= {"mcp-session-id": session, "mcp-protocol-version": VERSION}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await http.post(url, content=data, headers=headers)


async def ping(http: httpx2.AsyncClient, url: str, session: str) -> int:
    return (await post(http, url, {"jsonrpc": "2.0", "id": 7, "method": "ping"}, session)).status_code


async def test_a_session_silent_after_initialize_counts_against_the_quota_until_its_short_timeout_closes_it(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, {}, max_sessions_per_principal=3, session_handshake_timeout=1)
    async with serve(config) as (url, _), httpx2.AsyncClient(timeout=30) as http:
        spoken = (await post(http, url, initialize())).headers["mcp-session-id"]
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await post(http, url, initialized, spoken)).status_code == 202
        silent = [(await post(http, url, initialize())).headers["mcp-session-id"] for _ in range(2)]
        # Until the sweep closes them, the silent sessions hold their places in the quota.
        assert (await post(http, url, initialize())).status_code == 429
        with anyio.fail_after(60):
            while (answer := await post(http, url, initialize())).status_code == 429:
                await anyio.sleep(0.2)
        assert answer.status_code == 200
        assert [await ping(http, url, session) for session in silent] == [404, 404]
        # The session that finished its handshake (older, and idle as long) is kept.
        assert await ping(http, url, spoken) == 200


async def test_a_session_keeps_only_the_relayed_capabilities_and_a_bounded_client_info(tmp_path: Path) -> None:
    config = write_config(tmp_path, {})
    bulky = {f"k{i}": i for i in range(20_000)}
    capabilities = {"elicitation": {"form": {}}, "roots": {"listChanged": True}, "experimental": bulky, "x": bulky}
    client_info = {"name": "n" * 10_000, "version": "1", "title": "t", "extra": bulky, "icons": [bulky]}
    async with serve(config) as (url, gateway), httpx2.AsyncClient(timeout=30) as http:
        answer = await post(http, url, initialize(capabilities, client_info))
        assert answer.status_code == 200, answer.text
        (session,) = [s for s in gateway.router.sessions if s.id == answer.headers["mcp-session-id"]]
    assert session.client_capabilities == {"elicitation": {"form": {}}, "roots": {"listChanged": True}}
    assert session.client_info == {"name": "n" * MAX_CLIENT_INFO, "version": "1", "title": "t"}


@pytest.mark.parametrize(
    "elicitation",
    [{"form": {"pad": "x" * MAX_CAPABILITY_BYTES}}, "yes", [1]],
    ids=["oversized", "a string", "a list"],
)
async def test_a_relayed_capability_that_is_oversized_or_not_an_object_is_refused_and_no_session_is_kept(
    tmp_path: Path, elicitation: Any
) -> None:
    config = write_config(tmp_path, {})
    async with serve(config) as (url, gateway), httpx2.AsyncClient(timeout=30) as http:
        answer = await post(http, url, initialize({"elicitation": elicitation}))
        held = len(gateway.router.sessions)
    assert answer.status_code == 200 and "mcp-session-id" not in answer.headers
    error = answer.json()["error"]
    assert error["code"] == INVALID_PARAMS
    assert error["message"] == f"capabilities.elicitation must be an object of at most {MAX_CAPABILITY_BYTES} bytes"
    assert held == 0
