"""What the audit's retention and anchor tests share: chains written by the real writer
into a migrated store, rows read back, and the CLI run as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mcp_gateway.audit.chain import link
from mcp_gateway.audit.writer import AuditWriter
from mcp_gateway.store import tables as t
from mcp_gateway.store.audit import appender

from ..support import write_config

OLD = 1_600_000_000.0
"""A time long past: rows from then are what a prune takes."""


def row(ts: float, i: int = 0) -> dict[str, Any]:
    return {"ts": ts, "kind": "decision", "principal_id": "t/p", "tool": f"tool{i}", "decision": "allow"}


async def write_chain(url: str, chain: str, times: list[float], *, end: bool = False) -> None:
    """Rows at `times` appended to `chain` by the real writer (continuing the chain if it exists)."""
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(appender(url), chain)
        await writer.start(tg)
        for i, ts in enumerate(times):
            writer.append_nowait(row(ts, i))
        await writer.drain(end=end)


async def rows_of(engine: AsyncEngine, chain: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(t.audit).order_by(t.audit.c.chain, t.audit.c.chain_seq)
    if chain is not None:
        query = query.where(t.audit.c.chain == chain)
    async with engine.connect() as conn:
        return [{str(k): v for k, v in r._mapping.items()} for r in await conn.execute(query)]


async def forge_after(engine: AsyncEngine, newest: dict[str, Any], ts: float) -> dict[str, Any]:
    """A row that links correctly after `newest` (what someone who can write the store and
    knows the hash function can always add): the chain still verifies without an anchor."""
    forged = link(row(ts, 999), newest["chain"], newest["chain_seq"] + 1, newest["hash"])
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t.audit).values(**forged))
    return forged


def config_for(directory: Path, url: str) -> Path:
    return write_config(directory, {}, database_url=url, policies=None)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mcp_gateway", "audit", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)
