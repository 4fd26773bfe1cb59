"""A PostgreSQL network partition: every call and admin action fails within a bound, and
nothing started during the partition takes effect after it heals.

The gateway reaches PostgreSQL through a forwarder the test black-holes: connections stay
open and nothing arrives either way, which is what a partition looks like (a cut, which
resets connections, is the easy case). On heal, what a still-open connection sent is
delivered, as TCP's retransmission would deliver it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from sqlalchemy import event

from mcp_gateway.errors import GATEWAY_DENIED
from mcp_gateway.runtime import Gateway

from ..stores import PG_HOST, PG_PORT, PG_USER, postgres_database
from ..support import TcpProxy, admin_client, agent, recorder_upstream, serve, wait_ready, write_config

pytestmark = pytest.mark.anyio

BOUND = 6.0
"""Every call's answer during the partition comes within this (snapshot_max_age is 5 s)."""

ADMIN_BOUND = 12.0
"""An admin action's answer comes within a few store_timeouts (3 s): its audit row, then
a pooled connection's check and a new connection, each bounded."""


@asynccontextmanager
async def behind_a_forwarder(tmp_path: Path, log: Path) -> AsyncIterator[tuple[str, Gateway, TcpProxy, str]]:
    """A gateway on PostgreSQL through a forwarder; yields its URL, the gateway, the
    forwarder and the database's name (for looking at it directly)."""
    async with anyio.create_task_group() as tg, postgres_database() as pg_url:
        proxy = TcpProxy(PG_HOST, PG_PORT)
        await tg.start(proxy.run)
        config = write_config(
            tmp_path,
            {"rec": recorder_upstream(log)},
            database_url=pg_url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}"),
            snapshot_max_age=5.0,
            snapshot_poll_interval=0.5,
        )
        try:
            async with serve(config) as (url, gw):
                await wait_ready(gw)
                try:
                    yield url, gw, proxy, pg_url.rsplit("/", 1)[1]
                finally:
                    proxy.heal()  # never leave the gateway's shutdown facing a black hole
        finally:
            proxy.cut()


async def _until_calls_pass(url: str, text: str) -> None:
    """After the heal: the snapshot is fresh again and the audit writes again."""
    async with agent(url) as client:
        with anyio.fail_after(30):
            while True:
                try:
                    await client.call_tool("rec__record", {"text": text})
                    return
                except MCPError:
                    await anyio.sleep(0.2)


async def test_calls_during_a_store_partition_are_denied_within_the_bound_and_never_forwarded_after_it(
    tmp_path: Path,
) -> None:
    log = tmp_path / "calls.log"
    answers: dict[str, str] = {}
    async with behind_a_forwarder(tmp_path, log) as (url, gw, proxy, _):
        async with agent(url) as client:
            await client.call_tool("rec__record", {"text": "before"})

            async def call(text: str) -> None:
                with anyio.fail_after(BOUND):
                    try:
                        await client.call_tool("rec__record", {"text": text})
                        answers[text] = "answered"
                    except MCPError as exc:
                        assert exc.error.code == GATEWAY_DENIED
                        answers[text] = str(exc.error.data["reason"])

            proxy.black_hole()
            # While the snapshot is still fresh, these are allowed and wait for their audit row.
            async with anyio.create_task_group() as calls:
                for i in range(8):
                    calls.start_soon(call, f"fresh {i}")
            with anyio.fail_after(BOUND):
                while not gw.snapshots.stale():
                    await anyio.sleep(0.05)
            # Stale: denied by the decision, but the denial's own audit row cannot be written either.
            async with anyio.create_task_group() as calls:
                for i in range(8):
                    calls.start_soon(call, f"stale {i}")
        proxy.heal()
        await _until_calls_pass(url, "after")
        await _until_calls_pass(url, "after, again")

    assert {text for text, answer in answers.items() if answer == "answered"} == set()
    assert {answers[f"fresh {i}"] for i in range(8)} == {"audit unavailable"}
    assert all("stale" in answers[f"stale {i}"] or answers[f"stale {i}"] == "audit unavailable" for i in range(8))
    assert log.read_text().splitlines() == ["before", "after", "after, again"]


async def _engage(admin: httpx2.AsyncClient) -> str:
    response = await admin.post("/kill-switches", json={"scope": "server", "server": "rec", "reason": "incident"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _released_at(database: str, switch_id: str) -> Any:
    """The switch's row, read directly (not through the forwarder)."""
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        return await conn.fetchval("SELECT released_at FROM kill_switches WHERE id = $1", switch_id)
    finally:
        await conn.close()


async def test_a_release_sent_during_a_partition_is_not_applied_after_the_heal(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    response: httpx2.Response | None = None
    async with behind_a_forwarder(tmp_path, log) as (url, gw, proxy, database):
        async with admin_client(url) as admin:
            switch = await _engage(admin)
            proxy.black_hole()
            with anyio.move_on_after(BOUND):  # the operator gives up; refused at its audit row well before
                response = await admin.post(f"/kill-switches/{switch}/release", json={"reason": "all clear"})
        proxy.heal()
        async with admin_client(url) as admin:
            with anyio.fail_after(30):
                while (
                    await admin.post(
                        "/kill-switches",
                        json={"scope": "tool", "server": "x", "tool": "y", "reason": "probe", "unconfigured": True},
                    )
                ).status_code != 201:
                    await anyio.sleep(0.2)
        # The gateway writes again. A release held anywhere would now go through within
        # moments: watch a while (a non-event has no event to wait for).
        with anyio.move_on_after(3):
            while True:
                assert await _released_at(database, switch) is None
                assert switch in {s.id for s in gw.snapshots.current.policy.switches}
                await anyio.sleep(0.1)
    assert response is not None, "the release was not answered within the bound"
    assert response.status_code == 503, response.text


async def _settled(database: str) -> None:
    """Wait until no session on `database` is inside a transaction: whatever the server
    holds of the gateway's transactions has been committed, rolled back or ended."""
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        with anyio.fail_after(30):
            while await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
                "AND (state LIKE 'idle in transaction%' OR (state = 'active' AND query NOT LIKE 'LISTEN%'))",
                database,
            ):
                await anyio.sleep(0.1)
    finally:
        await conn.close()


async def test_a_release_whose_commit_is_cut_off_is_not_applied_after_the_heal(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    response: httpx2.Response | None = None
    async with behind_a_forwarder(tmp_path, log) as (url, gw, proxy, database):
        async with admin_client(url) as admin:
            switch = await _engage(admin)
            armed = True

            def partition_before_commit(_: Any) -> None:
                nonlocal armed
                if armed:
                    armed = False
                    proxy.black_hole()

            # The audit row is committed (on the writer's own connection); the partition
            # begins as the release's own transaction sends COMMIT.
            event.listen(gw.engine.sync_engine, "commit", partition_before_commit)
            with anyio.move_on_after(ADMIN_BOUND):  # the operator gives up
                response = await admin.post(f"/kill-switches/{switch}/release", json={"reason": "all clear"})
            assert not armed
        proxy.heal()
        await _settled(database)
        assert await _released_at(database, switch) is None
        assert switch in {s.id for s in gw.snapshots.current.policy.switches}
    assert response is not None, "the release was not answered within the bound"
    assert response.status_code == 503, response.text


async def test_a_release_cut_off_after_its_audit_is_not_applied_after_the_heal(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    response: httpx2.Response | None = None
    async with behind_a_forwarder(tmp_path, log) as (url, gw, proxy, database):
        async with admin_client(url) as admin:
            switch = await _engage(admin)
            audit_admin = gw.governance.audit_admin

            async def partition_after_the_audit(*args: Any, **kwargs: Any) -> None:
                await audit_admin(*args, **kwargs)
                proxy.black_hole()

            # The audit row is committed; the partition begins before the release takes
            # a pooled connection, whose check finds it silent.
            gw.governance.audit_admin = partition_after_the_audit  # type: ignore[method-assign]
            with anyio.move_on_after(ADMIN_BOUND):  # the operator gives up
                response = await admin.post(f"/kill-switches/{switch}/release", json={"reason": "all clear"})
            assert proxy.partitioned
        proxy.heal()
        await _settled(database)
        assert await _released_at(database, switch) is None
        assert switch in {s.id for s in gw.snapshots.current.policy.switches}
    assert response is not None, "the release was not answered within the bound"
    assert response.status_code == 503, response.text
