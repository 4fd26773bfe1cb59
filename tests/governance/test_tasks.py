"""Tasks (the 2026-07-28 tasks extension) through the gateway, with the everything server as a
real stdio upstream: a task's creation is decided and audited like a call, a kill switch
cancels the running task upstream and audits it `killed`, only its creator can reach it, and
the registry is bounded per principal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.errors import GATEWAY_DENIED
from mcp_gateway.protocol import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    INVALID_PARAMS,
    PROTOCOL_VERSION_META_KEY,
    RELATED_TASK_META_KEY,
    TASKS_EXTENSION,
)

from ..adversarial.common import Deployment, error_of, rpc
from ..support import admin_client, create_key, serve, stdio_upstream, wait_ready, write_config, write_policies

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
POLICY = {
    "teams": {
        "ops": {"rules": [{"id": "ops-all", "allow": {"servers": ["*"]}}]},
        "narrow": {"rules": [{"id": "narrow-echo", "allow": {"servers": ["x"], "tools": ["echo"]}}]},
    }
}


class ModernClient:
    """A 2026-07-28 client declaring the tasks extension, on raw HTTP (each request stands alone)."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.url = url
        self._id = 0

    async def request(self, method: str, params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        """The JSON-RPC response (its `result` or its `error`)."""
        self._id += 1
        meta = {
            PROTOCOL_VERSION_META_KEY: MODERN,
            CLIENT_CAPABILITIES_META_KEY: {"extensions": {TASKS_EXTENSION: {}}},
            CLIENT_INFO_META_KEY: {"name": "tasks-test", "version": "1"},
        }
        body = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": {**params, "_meta": meta}}
        headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method, "Accept": "application/json"}
        if name is not None:
            headers["Mcp-Name"] = name
        response = await self.http.post(self.url, json=body, headers=headers)
        message = response.json()
        assert isinstance(message, dict), response.text
        return message

    async def start(self, seconds: float = 60, label: str = "t") -> dict[str, Any]:
        arguments = {"seconds": seconds, "label": label}
        return await self.request("tools/call", {"name": "x__slow_compute", "arguments": arguments}, "x__slow_compute")

    async def task(self, method: str, task_id: str) -> dict[str, Any]:
        params: dict[str, Any] = {"taskId": task_id}
        if method == "tasks/update":
            params["inputResponses"] = {}
        return await self.request(method, params, task_id)

    async def aclose(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def gateway(tmp_path: Path, store_url: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    cancel_log, task_log = tmp_path / "cancelled.log", tmp_path / "tasks.log"
    cancel_log.touch()
    task_log.touch()
    write_policies(tmp_path / "policies", POLICY)
    env = {"EVERYTHING_CANCEL_LOG": str(cancel_log), "EVERYTHING_TASK_LOG": str(task_log)}
    config = write_config(
        tmp_path, {"x": stdio_upstream(env=env)}, auth="keys", policies="policies", database_url=store_url
    )
    overrides = getattr(request, "param", {})
    async with serve(config, **overrides) as (url, gw):
        await wait_ready(gw)
        yield url, gw, cancel_log, task_log


async def _completions(url: str, tool: str) -> list[dict[str, Any]]:
    async with admin_client(url) as admin:
        response = await admin.get("/audit", params={"kind": "completion", "tool": tool, "limit": 100})
        return list(response.json()["items"])


async def test_a_tool_kill_switch_cancels_a_running_task_upstream_and_the_audit_records_it_killed(
    gateway: Any,
) -> None:
    url, gw, cancel_log, _ = gateway
    client = ModernClient(url, await create_key(url, "ops", "bot"))
    try:
        created = (await client.start())["result"]
        assert created["resultType"] == "task"
        task_id = created["taskId"]
        assert (await client.task("tasks/get", task_id))["result"]["status"] == "working"
        async with admin_client(url) as admin:
            engaged = await admin.post(
                "/kill-switches",
                json={"scope": "tool", "server": "x", "tool": "slow_compute", "reason": "runaway job"},
            )
            assert engaged.status_code == 201, engaged.text
        switch = engaged.json()
        with anyio.fail_after(20):  # the upstream saw its task cancelled
            while "cancelled slow_compute" not in cancel_log.read_text():
                await anyio.sleep(0.05)
        with anyio.fail_after(20):
            while not any(r["method"] == "tools/call" for r in await _completions(url, "slow_compute")):
                await anyio.sleep(0.05)
        rows = [r for r in await _completions(url, "slow_compute") if r["method"] == "tools/call"]
        assert [(r["outcome"], r["detail"]) for r in rows] == [("killed", switch["id"])]
        assert len(gw.governance.inflight) == 0
        # Its owner now gets the kill error for the stopped tool's task, nothing from upstream.
        after = await client.task("tasks/get", task_id)
        assert after["error"]["code"] == GATEWAY_DENIED
        assert after["error"]["data"]["kill_switch_id"] == switch["id"]
    finally:
        await client.aclose()


async def test_another_principal_cannot_get_update_or_cancel_a_task_and_its_attempts_are_audited(
    gateway: Any,
) -> None:
    url, _, cancel_log, _ = gateway
    owner = ModernClient(url, await create_key(url, "ops", "owner"))
    other = ModernClient(url, await create_key(url, "ops", "other"))
    try:
        task_id = (await owner.start())["result"]["taskId"]
        for method in ("tasks/get", "tasks/update", "tasks/cancel"):
            refused = await other.task(method, task_id)
            assert refused["error"]["code"] == INVALID_PARAMS, refused
            assert "Unknown task" in refused["error"]["message"]
        # Untouched: still running, its owner reaches it, the upstream never cancelled it.
        assert (await owner.task("tasks/get", task_id))["result"]["status"] == "working"
        assert "cancelled" not in cancel_log.read_text()
        async with admin_client(url) as admin:
            rows = (await admin.get("/audit", params={"kind": "decision", "limit": 100})).json()["items"]
        denied = [(r["principal_id"], r["method"]) for r in rows if r["reason"] == "no such task"]
        assert sorted(denied) == [("ops/other", m) for m in ("tasks/cancel", "tasks/get", "tasks/update")]
        ack = (await owner.task("tasks/cancel", task_id))["result"]
        assert ack["resultType"] == "complete" and "taskId" not in ack
    finally:
        await owner.aclose()
        await other.aclose()


async def test_a_denied_task_creation_is_audited_and_never_reaches_the_upstream(gateway: Any) -> None:
    url, _, _, task_log = gateway
    client = ModernClient(url, await create_key(url, "narrow", "bot"))
    try:
        denied = await client.start(seconds=1)
        assert denied["error"]["code"] == GATEWAY_DENIED, denied
    finally:
        await client.aclose()
    async with admin_client(url) as admin:
        rows = (await admin.get("/audit", params={"kind": "decision", "tool": "slow_compute"})).json()["items"]
    assert [(r["principal_id"], r["decision"]) for r in rows] == [("narrow/bot", "deny")]
    assert task_log.read_text() == ""  # nothing was started upstream


@pytest.mark.parametrize("gateway", [{"max_tasks_per_principal": 2}], indirect=True)
async def test_the_registry_refuses_a_task_beyond_max_tasks_per_principal_with_a_clear_error(gateway: Any) -> None:
    url, _, _, task_log = gateway
    bot = ModernClient(url, await create_key(url, "ops", "bot"))
    other = ModernClient(url, await create_key(url, "ops", "other"))
    try:
        for label in ("one", "two"):
            assert (await bot.start(label=label))["result"]["resultType"] == "task"
        refused = await bot.start(label="three")
        assert refused["error"]["code"] == GATEWAY_DENIED, refused
        assert "max_tasks_per_principal" in refused["error"]["message"]
        assert refused["error"]["data"]["limit"] == "max_tasks_per_principal"
        assert task_log.read_text().count("started slow_compute") == 2  # the third never went upstream
        # One principal exhausts only itself.
        assert (await other.start(label="theirs"))["result"]["resultType"] == "task"
    finally:
        await bot.aclose()
        await other.aclose()


async def test_a_handshake_client_reads_only_its_own_tasks_through_the_2025_11_25_methods(gateway: Any) -> None:
    url, _, _, _ = gateway
    deployment = Deployment(url, url.rsplit("/mcp", 1)[0])
    owner_key, other_key = await create_key(url, "ops", "owner"), await create_key(url, "ops", "other")
    async with rpc(deployment, owner_key, "legacy") as owner, rpc(deployment, other_key, "legacy") as other:
        call = {"name": "x__slow_compute", "arguments": {"seconds": 0.5, "label": "v1"}, "task": {"ttl": 60000}}
        created = (await owner.request("tools/call", call)).json()["result"]
        task_id = created["task"]["taskId"]
        assert created["task"]["status"] == "working" and "resultType" not in created
        listed = (await other.request("tasks/list", {})).json()["result"]["tasks"]
        assert listed == []  # another principal's list holds none of it
        for method in ("tasks/get", "tasks/result", "tasks/cancel"):
            assert error_of(await other.request(method, {"taskId": task_id}))["code"] == INVALID_PARAMS
        assert [t["taskId"] for t in (await owner.request("tasks/list", {})).json()["result"]["tasks"]] == [task_id]
        result = (await owner.request("tasks/result", {"taskId": task_id})).json()["result"]
        assert result["content"][0]["text"] == "computed v1 after 0.5s"
        assert result["_meta"][RELATED_TASK_META_KEY] == {"taskId": task_id}
        assert (await owner.request("tasks/get", {"taskId": task_id})).json()["result"]["status"] == "completed"


async def test_revoking_the_key_that_created_a_task_cancels_it_upstream_and_audits_it_killed(gateway: Any) -> None:
    url, _, cancel_log, _ = gateway
    async with admin_client(url) as admin:
        made = await admin.post("/keys", json={"team": "ops", "name": "leaky"})
        assert made.status_code == 201, made.text
        client = ModernClient(url, made.json()["key"])
        try:
            assert (await client.start())["result"]["resultType"] == "task"
            assert (await admin.delete(f"/keys/{made.json()['id']}")).status_code == 200
            with anyio.fail_after(20):
                while "cancelled slow_compute" not in cancel_log.read_text():
                    await anyio.sleep(0.05)
                while not (rows := [r for r in await _completions(url, "slow_compute") if r["method"] == "tools/call"]):
                    await anyio.sleep(0.05)
        finally:
            await client.aclose()
    assert [(r["outcome"], r["detail"]) for r in rows] == [("killed", f"revoked:{made.json()['id']}")]


async def _statuses_until_done(
    client: Any, ids: dict[str, str], who: str, seen: list[dict[str, Any]], ready: anyio.Event
) -> None:
    """Read the session's GET stream until its task (`ids[who]`, known once created) is
    reported completed; keep every task status seen."""
    headers = {**client.headers(), "accept": "text/event-stream"}
    async with client.http.stream("GET", "/mcp", headers=headers) as stream:
        assert stream.status_code == 200
        ready.set()
        async for line in stream.aiter_lines():
            if not line.startswith("data:") or not line[5:].strip():
                continue
            message = json.loads(line[5:])
            if message.get("method") == "notifications/tasks/status":
                seen.append(message["params"])
                if message["params"]["taskId"] == ids.get(who) and message["params"]["status"] == "completed":
                    return


async def test_task_status_notifications_go_to_the_creating_session_only(gateway: Any) -> None:
    url, _, _, _ = gateway
    deployment = Deployment(url, url.rsplit("/mcp", 1)[0])
    keys = await create_key(url, "ops", "owner"), await create_key(url, "ops", "other")
    async with rpc(deployment, keys[0], "legacy") as owner, rpc(deployment, keys[1], "legacy") as other:
        seen: dict[str, list[dict[str, Any]]] = {"owner": [], "other": []}
        ids: dict[str, str] = {}
        clients = {"owner": (owner, 0.3), "other": (other, 1.5)}
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for who, (client, _) in clients.items():
                    ready = anyio.Event()
                    tg.start_soon(_statuses_until_done, client, ids, who, seen[who], ready)
                    await ready.wait()
                for who, (client, seconds) in clients.items():
                    call = {"name": "x__slow_compute", "arguments": {"seconds": seconds}, "task": {"ttl": 60000}}
                    ids[who] = (await client.request("tools/call", call)).json()["result"]["task"]["taskId"]
    # Each session heard of its own task, and of no other (the owner's ended first).
    for who in clients:
        assert seen[who] and {n["taskId"] for n in seen[who]} == {ids[who]}, seen


@pytest.mark.parametrize("gateway", [{"task_record_ttl": 0.2}], indirect=True)
async def test_a_finished_tasks_record_is_dropped_after_task_record_ttl(gateway: Any) -> None:
    url, gw, _, _ = gateway
    client = ModernClient(url, await create_key(url, "ops", "bot"))
    try:
        task_id = (await client.start(seconds=0.1))["result"]["taskId"]
        assert len(gw.router.tasks) == 1
        with anyio.fail_after(20):
            while len(gw.router.tasks):
                await anyio.sleep(0.05)
        gone = await client.task("tasks/get", task_id)
        assert gone["error"]["code"] == INVALID_PARAMS and "Unknown task" in gone["error"]["message"]
        rows = [r for r in await _completions(url, "slow_compute") if r["method"] == "tools/call"]
        assert [r["outcome"] for r in rows] == ["ok"]  # its end was audited before it went
    finally:
        await client.aclose()


async def test_a_finished_tasks_result_names_resources_as_the_gateway_exposes_them(gateway: Any) -> None:
    url, _, _, _ = gateway
    client = ModernClient(url, await create_key(url, "ops", "bot"))
    try:
        arguments = {"seconds": 0.1, "label": "l", "link": "test://static-text"}
        created = await client.request(
            "tools/call", {"name": "x__slow_compute", "arguments": arguments}, "x__slow_compute"
        )
        task_id = created["result"]["taskId"]
        with anyio.fail_after(20):
            while (got := (await client.task("tasks/get", task_id))["result"])["status"] != "completed":
                await anyio.sleep(0.05)
    finally:
        await client.aclose()
    links = [b["uri"] for b in got["result"]["content"] if b["type"] == "resource_link"]
    assert links == ["x+test://static-text"]  # readable back through the gateway under that name
