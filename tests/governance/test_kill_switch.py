"""The kill switch, through the admin REST API, on both stores: engaging it ends the
matching calls in flight with the kill error (the upstream sees each cancelled), denies
new ones, hides the tools, is audited as `killed`; releasing it restores service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.errors import GATEWAY_DENIED

from ..support import admin_client, agent, create_key, serve, stdio_upstream, wait_ready, write_config, write_policies

pytestmark = pytest.mark.anyio

CALLS = 20
POLICY = {"teams": {"ops": {"rules": [{"id": "ops-all", "allow": {"servers": ["*"]}}]}}}
SWITCHES = {
    "server": {"scope": "server", "server": "x"},
    "global": {"scope": "global"},
    "tool": {"scope": "tool", "server": "x", "tool": "slow"},
}


@pytest.fixture
async def gateway(tmp_path: Path, store_url: str):  # type: ignore[no-untyped-def]
    cancel_log = tmp_path / "cancelled.log"
    cancel_log.touch()
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(
        tmp_path,
        {"x": stdio_upstream(env={"EVERYTHING_CANCEL_LOG": str(cancel_log)}), "y": stdio_upstream()},
        auth="keys",
        policies="policies",
        database_url=store_url,
    )
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url, gw, cancel_log


async def _slow_calls(url: str, key: str, outcomes: list[Any], started: anyio.Event) -> None:
    async with agent(url, key) as client, anyio.create_task_group() as tg:
        for _ in range(CALLS):

            async def one() -> None:
                try:
                    await client.call_tool("x__slow", {"seconds": 60})
                    outcomes.append("finished")
                except MCPError as exc:
                    outcomes.append(exc.error)

            tg.start_soon(one)
        started.set()


async def _wait_in_flight(gw: Any, count: int) -> None:
    with anyio.fail_after(20):
        while len(gw.governance.inflight) < count:
            await anyio.sleep(0.02)


@pytest.mark.parametrize("scope", list(SWITCHES))
async def test_engaging_a_switch_ends_calls_in_flight_and_releasing_restores_service(gateway: Any, scope: str) -> None:
    url, gw, cancel_log = gateway
    key = await create_key(url, "ops", "bot")
    outcomes: list[Any] = []
    started = anyio.Event()
    async with admin_client(url) as admin, anyio.create_task_group() as tg:
        tg.start_soon(_slow_calls, url, key, outcomes, started)
        await started.wait()
        await _wait_in_flight(gw, CALLS)
        engaged = await admin.post("/kill-switches", json={**SWITCHES[scope], "reason": "incident 42"})
        assert engaged.status_code == 201, engaged.text
        switch = engaged.json()
        with anyio.fail_after(10):
            while len(outcomes) < CALLS:
                await anyio.sleep(0.01)

    assert len(outcomes) == CALLS
    for error in outcomes:
        assert error != "finished"
        assert error.code == GATEWAY_DENIED
        assert error.data["reason"] == "kill_switch" and error.data["kill_switch_id"] == switch["id"]
    with anyio.fail_after(10):  # the upstream saw every call cancelled
        while cancel_log.read_text().count("cancelled slow") < CALLS:
            await anyio.sleep(0.05)

    async with agent(url, key) as client:
        with pytest.raises(MCPError) as denied:
            await client.call_tool("x__slow", {"seconds": 0.01})
        names = {t.name for t in (await client.list_tools()).tools}
    assert denied.value.error.code == GATEWAY_DENIED
    assert denied.value.error.data["kill_switch_id"] == switch["id"]
    assert "x__slow" not in names
    if scope == "tool":
        assert "x__echo" in names  # only that tool is stopped
    if scope == "server":
        assert "y__echo" in names and not any(n.startswith("x__") for n in names)

    async with admin_client(url) as admin:
        killed = (await admin.get("/audit", params={"kind": "completion", "tool": "slow", "limit": 100})).json()[
            "items"
        ]
        assert sum(row["outcome"] == "killed" for row in killed) == CALLS
        released = await admin.post(f"/kill-switches/{switch['id']}/release", json={"reason": "resolved"})
        assert released.status_code == 200 and released.json()["released_by"] == "admin-token"
        active = (await admin.get("/kill-switches")).json()["items"]
    assert all(item["id"] != switch["id"] for item in active)
    async with agent(url, key) as client:
        result = await client.call_tool("x__slow", {"seconds": 0.01})
        assert "x__slow" in {t.name for t in (await client.list_tools()).tools}
    assert result.content[0].text == "slept"  # type: ignore[union-attr]


async def test_a_team_switch_stops_that_team_only(gateway: Any) -> None:
    url, _, _ = gateway
    ops, other = await create_key(url, "ops", "bot"), await create_key(url, "ops", "other")
    async with admin_client(url) as admin:
        response = await admin.post(
            "/kill-switches", json={"scope": "principal", "principal": "ops/bot", "reason": "leaked key"}
        )
        assert response.status_code == 201
    async with agent(url, ops) as client:
        with pytest.raises(MCPError):
            await client.call_tool("x__echo", {"text": "no"})
    async with agent(url, other) as client:
        assert (await client.call_tool("x__echo", {"text": "yes"})).structured_content == {"text": "yes"}


async def test_a_switch_with_an_expiry_stops_holding_when_it_expires(gateway: Any) -> None:
    url, _, _ = gateway
    key = await create_key(url, "ops", "bot")
    async with admin_client(url) as admin:
        response = await admin.post(
            "/kill-switches", json={"scope": "server", "server": "x", "reason": "brief", "expires_in_seconds": 1}
        )
        assert response.status_code == 201
    async with agent(url, key) as client:
        with pytest.raises(MCPError):
            await client.call_tool("x__echo", {"text": "stopped"})
        with anyio.fail_after(10):
            while True:
                try:
                    await client.call_tool("x__echo", {"text": "back"})
                    break
                except MCPError:
                    await anyio.sleep(0.1)


async def test_engaging_needs_a_reason_and_a_target(gateway: Any) -> None:
    url, _, _ = gateway
    async with admin_client(url) as admin:
        no_reason = await admin.post("/kill-switches", json={"scope": "global"})
        no_target = await admin.post("/kill-switches", json={"scope": "server", "reason": "x"})
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["error"]["message"]
    assert no_target.status_code == 400 and "server" in no_target.json()["error"]["message"]


async def test_clients_are_told_to_list_again_when_a_switch_is_engaged_and_when_it_expires(gateway: Any) -> None:
    import mcp.types as types

    url, _, _ = gateway
    key = await create_key(url, "ops", "bot")
    changed = anyio.Event()
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            seen.append("tools")
            if seen.count("tools") >= 2:
                changed.set()

    async with agent(url, key, message_handler=on_message) as client:
        await client.list_tools()  # the session's GET stream is open
        async with admin_client(url) as admin:
            response = await admin.post(
                "/kill-switches",
                json={"scope": "tool", "server": "x", "tool": "echo", "reason": "brief", "expires_in_seconds": 1},
            )
            assert response.status_code == 201
        with anyio.fail_after(15):
            await changed.wait()  # once when engaged, once when it expired
        names = {t.name for t in (await client.list_tools()).tools}
    assert "x__echo" in names
