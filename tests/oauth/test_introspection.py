"""Opaque access tokens, checked with the provider's introspection endpoint (RFC 7662): an
active one reaches tools as its team; a revoked one is refused once the cached answer ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..support import agent, environ, raw_client, wait_ready
from .common import oauth_gateway
from .provider import Provider

pytestmark = pytest.mark.anyio

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


async def test_an_opaque_token_is_checked_by_introspection_and_a_revoked_one_is_refused(
    tmp_path: Path, provider: Provider
) -> None:
    introspection = {
        "endpoint": f"{provider.issuer}/token/introspection",
        "client_id": "gateway",
        "client_secret": {"$env": "GATEWAY_TEST_INTROSPECTION_SECRET"},
        "cache_seconds": 0,
    }
    with environ(GATEWAY_TEST_INTROSPECTION_SECRET="gateway-secret"):
        async with oauth_gateway(tmp_path, provider, introspection=introspection) as (url, gw):
            await wait_ready(gw)
            token = await provider.token("agent-opaque", url)
            async with agent(url, token) as client:
                assert not (await client.call_tool("everything__echo", {"text": "opaque"})).is_error
            revoked = await provider.http.post(
                "/token/revocation",
                data={"token": token, "client_id": "agent-opaque", "client_secret": "agent-opaque-secret"},
            )
            async with raw_client(url) as http:
                after = await http.post("/mcp", json=PING, headers={"Authorization": f"Bearer {token}"})
                made_up = await http.post("/mcp", json=PING, headers={"Authorization": "Bearer not-a-real-token"})

    assert token.count(".") != 2  # opaque indeed
    assert revoked.status_code == 200
    assert after.status_code == made_up.status_code == 401
    assert "not active" in after.json()["error"]["message"]
