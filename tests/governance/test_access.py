"""Per-team allow-lists, deny by default, on both stores: what one team may use, another
may neither see nor call, and both decisions are in the audit with the rule behind them."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.errors import GATEWAY_DENIED

from ..support import admin_client, agent, create_key, serve, stdio_upstream, wait_ready, write_config, write_policies

pytestmark = pytest.mark.anyio

POLICY = {
    "teams": {
        "alpha": {"rules": [{"id": "alpha-uses-x", "allow": {"servers": ["x"]}}]},
        "beta": {"rules": [{"id": "beta-uses-y", "allow": {"servers": ["y"]}}]},
    }
}


@pytest.fixture
async def gateway(tmp_path: Path, store_url: str):  # type: ignore[no-untyped-def]
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(
        tmp_path,
        {"x": stdio_upstream(), "y": stdio_upstream()},
        auth="keys",
        policies="policies",
        database_url=store_url,
    )
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_team_sees_and_calls_only_the_servers_its_policy_allows(gateway: str, mode: str) -> None:
    alpha, beta = await create_key(gateway, "alpha", "bot"), await create_key(gateway, "beta", "bot")
    async with agent(gateway, alpha, mode) as client:
        alpha_tools = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("x__echo", {"text": "allowed"})
    assert "x__echo" in alpha_tools and not any(name.startswith("y__") for name in alpha_tools)
    assert result.structured_content == {"text": "allowed"}

    async with agent(gateway, beta, mode) as client:
        beta_tools = {t.name for t in (await client.list_tools()).tools}
        with pytest.raises(MCPError) as denied:
            await client.call_tool("x__echo", {"text": "not for beta"})
    assert not any(name.startswith("x__") for name in beta_tools) and "y__echo" in beta_tools
    assert denied.value.error.code == GATEWAY_DENIED
    data = denied.value.error.data
    assert data["reason"] == "no rule allows this" and data["rule_id"] == "default-deny"
    assert data["policy_version"] >= 1


async def test_both_decisions_are_audited_with_their_rule(gateway: str) -> None:
    alpha, beta = await create_key(gateway, "alpha", "bot"), await create_key(gateway, "beta", "bot")
    async with agent(gateway, alpha) as client:
        await client.call_tool("x__add", {"a": 1, "b": 2})
    async with agent(gateway, beta) as client:
        with pytest.raises(MCPError):
            await client.call_tool("x__add", {"a": 1, "b": 2})
    async with admin_client(gateway) as admin:
        rows = (await admin.get("/audit", params={"kind": "decision", "tool": "add"})).json()["items"]
    decisions = {row["principal_id"]: row for row in rows}
    assert decisions["alpha/bot"]["decision"] == "allow"
    assert decisions["alpha/bot"]["rule_id"] == "alpha-uses-x"
    assert decisions["beta/bot"]["decision"] == "deny"
    assert decisions["beta/bot"]["rule_id"] == "default-deny"
    assert decisions["alpha/bot"]["policy_version"] == decisions["beta/bot"]["policy_version"] >= 1


async def test_missing_or_unknown_key_gets_401_with_www_authenticate(gateway: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx2.AsyncClient() as http:
        missing = await http.post(gateway, json=body)
        unknown = await http.post(gateway, json=body, headers={"Authorization": "Bearer mgw_0000_nope"})
    for response in (missing, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_key_is_refused_at_once(gateway: str) -> None:
    key = await create_key(gateway, "alpha", "temp")
    async with agent(gateway, key) as client:
        await client.call_tool("x__echo", {"text": "before"})
    key_id = key.split("_")[1]
    async with admin_client(gateway) as admin:
        assert (await admin.delete(f"/keys/{key_id}")).status_code == 200
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        response = await http.post(gateway, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    assert "not valid" in response.json()["error"]["message"]
