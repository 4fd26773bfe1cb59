"""The audit writer under a burst: every caller's row is committed before its call goes
on, in one chain that verifies, also when the database is briefly locked by someone else."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from mcp_gateway.audit.chain import GENESIS, link
from mcp_gateway.audit.verify import verify
from mcp_gateway.audit.writer import AuditWriter
from mcp_gateway.store import open_engine, upgrade
from mcp_gateway.store.audit import SqliteAppender, appender

pytestmark = pytest.mark.anyio

CALLERS = 200


def _row(i: int) -> dict[str, object]:
    return {"ts": 1_800_000_000.0 + i, "kind": "decision", "principal_id": "t/p", "tool": f"t{i}", "decision": "allow"}


async def test_a_burst_of_callers_is_committed_in_one_chain_that_verifies(store_url: str) -> None:
    engine = open_engine(store_url)
    await upgrade(engine)
    committed: list[int] = []
    try:
        async with anyio.create_task_group() as tg:
            writer = AuditWriter(appender(store_url), "burst")
            await writer.start(tg)

            async def caller(i: int) -> None:
                await writer.append(_row(i))  # returns once the row is committed
                committed.append(i)

            async with anyio.create_task_group() as callers:
                for i in range(CALLERS):
                    callers.start_soon(caller, i)
            writer.append_nowait(_row(CALLERS))  # a completion-like row nobody waits for
            written_before_drain = writer.written
            await writer.drain()
        assert sorted(committed) == list(range(CALLERS))
        assert written_before_drain >= CALLERS  # each caller's row was in before it went on
        assert writer.written == CALLERS + 1
        assert writer.failures == 0
        report = await verify(engine)
        assert report.ok, report.problems
        assert (report.rows, report.chains) == (CALLERS + 1, 1)
    finally:
        await engine.dispose()


async def test_a_large_batch_waits_out_a_database_locked_by_someone_else(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    engine = open_engine(f"sqlite:///{path}")
    await upgrade(engine)
    await engine.dispose()
    rows, prev = [], GENESIS
    for seq in range(1, 51):
        rows.append(link(_row(seq), "locked", seq, prev))
        prev = rows[-1]["hash"]
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process's write transaction, held for a while
    store = SqliteAppender(str(path))
    try:
        released = threading.Timer(0.3, other.execute, ("COMMIT",))
        released.start()
        started = time.monotonic()
        await store.append(rows)
        waited = time.monotonic() - started
        released.join()
        count = other.execute("SELECT count(*) FROM audit WHERE chain = 'locked'").fetchone()[0]
    finally:
        await store.aclose()
        other.close()
    assert count == 50
    assert waited >= 0.2  # it waited for the lock rather than failing or skipping
    engine = open_engine(f"sqlite:///{path}")
    try:
        report = await verify(engine)
    finally:
        await engine.dispose()
    assert report.ok, report.problems
