"""Two `mcp-gateway serve` processes sharing one PostgreSQL act as one gateway: a rule or
a kill switch set through either replica's admin API is enforced by the other (LISTEN/
NOTIFY, with polling behind it), calls in flight on the other replica are killed, and the
audit rows of both verify."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.errors import GATEWAY_DENIED

from ..stores import postgres_database
from ..support import GatewayProcess, admin_client, agent, stdio_upstream, write_config

pytestmark = pytest.mark.anyio


async def _until_allowed(url: str) -> None:
    async with agent(url) as client:
        with anyio.fail_after(10):
            while True:
                try:
                    await client.call_tool("everything__echo", {"text": "allowed?"})
                    return
                except MCPError:
                    await anyio.sleep(0.05)


async def test_two_replicas_on_postgres_act_as_one_gateway(tmp_path: Path) -> None:
    async with postgres_database() as url:
        # No policy directory: rules come through the admin API, so either replica may set them.
        config = write_config(tmp_path, {"everything": stdio_upstream()}, database_url=url, policies=None)
        a, b = (
            GatewayProcess(config, env={"MCP_GATEWAY_REPLICA_ID": "replica-a"}),
            GatewayProcess(config, env={"MCP_GATEWAY_REPLICA_ID": "replica-b"}),
        )
        try:
            await a.start()
            await b.start()
            async with agent(b.url) as client:
                with pytest.raises(MCPError) as denied:
                    await client.call_tool("everything__echo", {"text": "no rule yet"})
            assert denied.value.error.code == GATEWAY_DENIED

            async with admin_client(a.url) as admin:
                rule = {"id": "local-everything", "team": "local", "effect": "allow", "servers": ["everything"]}
                assert (await admin.post("/rules", json=rule)).status_code == 201
            await _until_allowed(b.url)  # a rule made through A is enforced by B

            outcomes: list[Any] = []
            async with agent(b.url) as client, anyio.create_task_group() as tg:

                async def slow() -> None:
                    try:
                        await client.call_tool("everything__slow", {"seconds": 60})
                        outcomes.append("finished")
                    except MCPError as exc:
                        outcomes.append(exc.error)

                for _ in range(5):
                    tg.start_soon(slow)
                async with admin_client(b.url) as admin_b:
                    with anyio.fail_after(10):
                        while (await admin_b.get("/status")).json()["in_flight"] < 5:
                            await anyio.sleep(0.05)
                async with admin_client(a.url) as admin:
                    engaged = await admin.post(
                        "/kill-switches", json={"scope": "server", "server": "everything", "reason": "replica test"}
                    )
                    assert engaged.status_code == 201
                switch = engaged.json()["id"]
            assert len(outcomes) == 5
            assert all(o != "finished" and o.data["kill_switch_id"] == switch for o in outcomes)

            async with admin_client(b.url) as admin_b:  # released through B, lifted on A
                assert (
                    await admin_b.post(f"/kill-switches/{switch}/release", json={"reason": "over"})
                ).status_code == 200
            await _until_allowed(a.url)
        finally:
            a.stop()
            b.stop()

        verified = subprocess.run(
            [sys.executable, "-m", "mcp_gateway", "audit", "verify", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stderr
        assert "2 chain(s)" in verified.stdout
