"""What an attacker's review of the fixed gateway found (after issue 11's breaks were
closed): names longer than the audit's columns, tasks that would run out of the kill
switch's reach, refusals that left no row, and URI spellings an upstream reads as
another name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_gateway.protocol import CLIENT_CAPABILITIES_META_KEY, TASKS_EXTENSION

from ..admin.common import audit_rows
from .common import MODERN, deployment, error_of, rpc

pytestmark = pytest.mark.anyio

MODES = ["legacy", MODERN]


async def test_a_denied_name_longer_than_the_audit_column_is_recorded_cut_short_and_fails_nobody_else(
    tmp_path: Path, store_url: str
) -> None:
    # On PostgreSQL a value over the column's width fails the whole group commit: every
    # other caller whose row shared it would be denied for "audit unavailable".
    async with deployment(tmp_path, database_url=store_url) as gateway:
        prober, probe_key = await gateway.key("beta")  # a team no rule allows anything
        _, key = await gateway.key("alpha")
        long_uri = "x+test://template/" + "a" * 400 + "/data"
        async with rpc(gateway, probe_key, "legacy") as probe, rpc(gateway, key, "legacy") as client:
            for _ in range(3):
                refused = await probe.request("resources/read", {"uri": long_uri})
                assert error_of(refused)["code"] == -32050, refused.text
                answered = await client.request("tools/call", {"name": "x__echo", "arguments": {"text": "fine"}})
                assert answered.json()["result"]["structuredContent"] == {"text": "fine"}, answered.text
        async with gateway.admin() as admin:
            rows = await audit_rows(admin, principal=prober, kind="decision")
        assert len(rows) == 3 and all(r["decision"] == "deny" for r in rows), rows
        assert all(len(r["tool"]) == 256 and r["tool"].startswith("test://template/aaa") for r in rows)


@pytest.mark.parametrize("mode", MODES)
async def test_a_task_is_decided_and_audited_as_a_call_and_stays_in_reach_of_the_kill_switch(
    tmp_path: Path, mode: str
) -> None:
    # A task runs upstream after its call has answered: were it not registered, it would run
    # on out of reach of kill switches and revocation. Both eras' ways of starting one.
    async with deployment(tmp_path) as gateway:
        who, key = await gateway.key()
        params: dict[str, Any] = {"name": "x__slow_compute", "arguments": {"seconds": 60}}
        async with rpc(gateway, key, mode) as client:
            if mode == MODERN:
                caps = {CLIENT_CAPABILITIES_META_KEY: {"extensions": {TASKS_EXTENSION: {}}}}
                created = (await client.request("tools/call", params, **caps)).json()["result"]
                task_id = created["taskId"]
            else:
                created = (await client.request("tools/call", {**params, "task": {"ttl": 60000}})).json()["result"]
                task_id = created["task"]["taskId"]
            async with gateway.admin() as admin:
                switch = await admin.post(
                    "/kill-switches", json={"scope": "tool", "server": "x", "tool": "slow_compute", "reason": "stop"}
                )
                assert switch.status_code == 201, switch.text
                with anyio.fail_after(20):
                    while not (rows := await audit_rows(admin, principal=who, kind="completion", tool="slow_compute")):
                        await anyio.sleep(0.05)
            assert [(r["method"], r["outcome"]) for r in rows] == [("tools/call", "killed")]
            get = await client.request("tasks/get", {"taskId": task_id}, **(caps if mode == MODERN else {}))
            assert error_of(get)["data"]["kill_switch_id"] == switch.json()["id"]


@pytest.mark.parametrize(
    "uri",
    [
        "x+test://template:/1/data",  # WHATWG drops the empty port: test://template/1/data
        "x+test://@template/1/data",  # and the empty userinfo
        "x+file://localhost/etc/passwd",  # file://localhost/ is file:///
        "x+http://0x7f.1/",  # a number a parser turns into 127.0.0.1
    ],
)
async def test_a_uri_an_upstream_would_read_as_another_name_is_refused_and_audited(tmp_path: Path, uri: str) -> None:
    async with deployment(tmp_path) as gateway:
        who, key = await gateway.key()
        async with rpc(gateway, key, "legacy") as client:
            read = await client.request("resources/read", {"uri": uri})
            assert error_of(read)["code"] == -32602, read.text
            completion = await client.request(
                "completion/complete",
                {"ref": {"type": "ref/resource", "uri": uri}, "argument": {"name": "id", "value": ""}},
            )
            assert error_of(completion)["code"] == -32602, completion.text
        async with gateway.admin() as admin:
            rows = await audit_rows(admin, principal=who, kind="decision")
        assert {r["method"] for r in rows} == {"resources/read", "completion/complete"}, rows
        assert all(r["decision"] == "deny" for r in rows)
