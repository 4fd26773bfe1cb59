"""Fail closed: when the gateway cannot decide or cannot audit, it denies.

The store is made unreachable for real (PostgreSQL behind a TCP forwarder that is cut;
SQLite by taking away the table the snapshot is read from), and audit writes are made to
fail for real (a trigger that rejects inserts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from mcp.shared.exceptions import MCPError
from sqlalchemy.ext.asyncio import create_async_engine

from mcp_gateway.errors import GATEWAY_DENIED
from mcp_gateway.store import normalize_url

from ..stores import PG_HOST, PG_PORT, postgres_database
from ..support import TcpProxy, agent, recorder_upstream, serve, wait_ready, write_config

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def sql(url: str) -> AsyncIterator[Any]:
    """A connection of the test's own to the gateway's store, for doing damage."""
    engine = create_async_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def _wait_until_stale(url: str) -> None:
    """The gateway serves from its snapshot until the snapshot is too old; then it shows nothing."""
    async with agent(url) as client:
        with anyio.fail_after(15):
            while (await client.list_tools()).tools:
                await anyio.sleep(0.1)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_unreachable_store_denies_every_call_once_the_snapshot_is_stale(tmp_path: Path, kind: str) -> None:
    log = tmp_path / "calls.log"
    async with anyio.create_task_group() as tg, postgres_database() as pg_url:
        proxy = TcpProxy(PG_HOST, PG_PORT)
        await tg.start(proxy.run)
        if kind == "postgres":
            url = pg_url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}")
        else:
            url = f"sqlite:///{tmp_path / 'gateway.db'}"
        config = write_config(
            tmp_path,
            {"rec": recorder_upstream(log)},
            database_url=url,
            snapshot_max_age=1.0,
            snapshot_poll_interval=0.2,
        )
        async with serve(config) as (gateway, gw):
            await wait_ready(gw)
            async with agent(gateway) as client:
                await client.call_tool("rec__record", {"text": "while the store is up"})

            if kind == "postgres":
                proxy.cut()
            else:
                async with sql(url) as conn:
                    await conn.execute(sa.text("ALTER TABLE gateway_state RENAME TO gateway_state_gone"))

            await _wait_until_stale(gateway)
            async with agent(gateway) as client:
                with pytest.raises(MCPError) as denied:
                    await client.call_tool("rec__record", {"text": "after the store went away"})
            assert denied.value.error.code == GATEWAY_DENIED
            assert "stale" in denied.value.error.data["reason"]

            if kind == "postgres":
                await tg.start(proxy.run)
            else:
                async with sql(url) as conn:
                    await conn.execute(sa.text("ALTER TABLE gateway_state_gone RENAME TO gateway_state"))
            async with agent(gateway) as client:
                with anyio.fail_after(15):
                    while not (await client.list_tools()).tools:
                        await anyio.sleep(0.1)
                await client.call_tool("rec__record", {"text": "once it is back"})
        proxy.cut()
    assert log.read_text().splitlines() == ["while the store is up", "once it is back"]


REJECT = {
    "sqlite": [
        "CREATE TRIGGER reject_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit rejected by test'); END"
    ],
    "postgres": [
        "CREATE FUNCTION reject_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit rejected by test'; END $$ "
        "LANGUAGE plpgsql",
        "CREATE TRIGGER reject_audit BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION reject_audit()",
    ],
}
ACCEPT = {"sqlite": ["DROP TRIGGER reject_audit"], "postgres": ["DROP TRIGGER reject_audit ON audit"]}


async def test_when_audit_writes_fail_no_call_is_forwarded(tmp_path: Path, store_url: str) -> None:
    log = tmp_path / "calls.log"
    kind = "sqlite" if store_url.startswith("sqlite") else "postgres"
    config = write_config(tmp_path, {"rec": recorder_upstream(log)}, database_url=store_url)
    async with serve(config) as (gateway, gw):
        await wait_ready(gw)
        async with agent(gateway) as client:
            await client.call_tool("rec__record", {"text": "audited"})
            async with sql(store_url) as conn:
                for statement in REJECT[kind]:
                    await conn.execute(sa.text(statement))
            with pytest.raises(MCPError) as denied:
                await client.call_tool("rec__record", {"text": "not audited"})
            async with sql(store_url) as conn:
                for statement in ACCEPT[kind]:
                    await conn.execute(sa.text(statement))
            await client.call_tool("rec__record", {"text": "audited again"})
    assert denied.value.error.code == GATEWAY_DENIED
    assert denied.value.error.data["reason"] == "audit unavailable"
    assert log.read_text().splitlines() == ["audited", "audited again"]
