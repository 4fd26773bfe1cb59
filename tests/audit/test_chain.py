"""The audit chain, on both stores: rows written by the real writer verify; editing,
deleting or reordering any row makes `audit verify` fail and name the first bad row."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mcp_gateway.audit.verify import verify
from mcp_gateway.audit.writer import AuditWriter
from mcp_gateway.store import open_engine, upgrade
from mcp_gateway.store import tables as t
from mcp_gateway.store.audit import appender

from ..support import write_config

pytestmark = pytest.mark.anyio

ROWS = 12


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = open_engine(store_url)
    await upgrade(engine)
    async with anyio.create_task_group() as tg:
        for chain in ("replica-a", "replica-b"):
            writer = AuditWriter(appender(store_url), chain)
            await writer.start(tg)
            for i in range(ROWS):
                row = {
                    "ts": 1_800_000_000.0 + i,
                    "kind": "decision",
                    "principal_id": "t/p",
                    "tool": f"tool{i}",
                    "decision": "allow",
                }
                if i % 3 == 0:
                    await writer.append(row)  # waits for its commit
                else:
                    writer.append_nowait(row)
            await writer.drain()
    try:
        yield engine
    finally:
        await engine.dispose()


async def _rows(engine: AsyncEngine, chain: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.select(t.audit).where(t.audit.c.chain == chain).order_by(t.audit.c.chain_seq))
        return [dict(r._mapping) for r in result]


async def test_rows_written_by_the_writer_verify(engine: AsyncEngine) -> None:
    report = await verify(engine)
    assert report.ok, report.problems
    assert (report.rows, report.chains) == (2 * ROWS, 2)


@pytest.mark.parametrize("index", [0, ROWS // 2, ROWS - 1])
async def test_an_edited_row_is_named(engine: AsyncEngine, index: int) -> None:
    target = (await _rows(engine, "replica-b"))[index]
    async with engine.begin() as conn:
        await conn.execute(sa.update(t.audit).where(t.audit.c.seq == target["seq"]).values(decision="deny"))
    report = await verify(engine)
    assert not report.ok
    assert report.first is not None and report.first.seq == target["seq"]
    assert "edited" in report.first.message


@pytest.mark.parametrize("index", [0, ROWS // 2, ROWS - 2])
async def test_a_deleted_row_is_named_by_the_row_after_it(engine: AsyncEngine, index: int) -> None:
    rows = await _rows(engine, "replica-a")
    async with engine.begin() as conn:
        await conn.execute(sa.delete(t.audit).where(t.audit.c.seq == rows[index]["seq"]))
    report = await verify(engine)
    assert report.first is not None and report.first.seq == rows[index + 1]["seq"]
    assert "deleted" in report.first.message


@pytest.mark.parametrize("index", [0, ROWS // 2, ROWS - 2])
async def test_two_rows_swapped_are_caught_at_the_first_of_them(engine: AsyncEngine, index: int) -> None:
    rows = await _rows(engine, "replica-a")
    first, second = rows[index], rows[index + 1]
    content = [c.name for c in t.audit.columns if c.name not in ("seq", "chain", "chain_seq")]
    async with engine.begin() as conn:
        for row, other in ((first, second), (second, first)):
            await conn.execute(
                sa.update(t.audit).where(t.audit.c.seq == row["seq"]).values(**{c: other[c] for c in content})
            )
    report = await verify(engine)
    assert report.first is not None and report.first.seq == first["seq"]


async def test_the_verify_command_exits_1_and_names_the_first_bad_row(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {}, database_url=store_url)
    command = [sys.executable, "-m", "mcp_gateway", "audit", "verify", "--config", str(config)]
    good = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    assert f"ok: {2 * ROWS} row(s) in 2 chain(s)" in good.stdout

    target = (await _rows(engine, "replica-a"))[3]
    async with engine.begin() as conn:
        await conn.execute(sa.update(t.audit).where(t.audit.c.seq == target["seq"]).values(ts=0.0))
    bad = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert f"first bad row: row seq={target['seq']} (chain replica-a #4)" in bad.stderr
