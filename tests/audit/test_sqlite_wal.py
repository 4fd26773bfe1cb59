"""Under a steady stream of audit commits the SQLite write-ahead log is checkpointed and
restarted, so it (and the gateway's memory, which maps its index) stays bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mcp_gateway.audit.chain import GENESIS, link
from mcp_gateway.store import open_engine, upgrade
from mcp_gateway.store.audit import SqliteAppender

pytestmark = pytest.mark.anyio

ROWS = 4000
LIMIT = 16 * 1024 * 1024


@pytest.mark.slow  # thousands of real commits: a stress test of the store, not a quick check
async def test_the_wal_stays_bounded_under_a_steady_stream_of_commits(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    engine = open_engine(f"sqlite:///{path}")
    await upgrade(engine)
    await engine.dispose()
    appender = SqliteAppender(str(path))
    appender.CHECKPOINT_EVERY = 0.05
    row = {"ts": 1.0, "kind": "decision", "detail": "x" * 200}
    largest = 0
    try:
        for seq in range(1, ROWS + 1):
            await appender.append([link(row, "c", seq, GENESIS)])  # one commit per row: the worst case
            await asyncio.sleep(0.0005)  # a steady stream: up to ~2000 commits a second
            if seq % 100 == 0:
                largest = max(largest, (tmp_path / "audit.db-wal").stat().st_size)
    finally:
        await appender.aclose()
    # Each single-row commit appends several whole pages: unchecked (a checkpoint racing the
    # writer never lets the log restart), it passes 60 MiB here. Restarted and cut back, it
    # stays under the 16 MiB the log is trimmed to.
    assert largest <= LIMIT, f"the WAL grew to {largest / 2**20:.1f} MiB"


async def test_the_probes_of_an_idle_writer_do_not_grow_the_wal(tmp_path: Path) -> None:
    # An idle gateway probes every `audit_probe_interval` (a row written and taken out again,
    # about 20 KB of log each) with no batch to checkpoint after: a day's probes would be
    # ~170 MB of log if the probes were not checkpointed too.
    path = tmp_path / "audit.db"
    engine = open_engine(f"sqlite:///{path}")
    await upgrade(engine)
    await engine.dispose()
    appender = SqliteAppender(str(path))
    appender.CHECKPOINT_EVERY = 0.0
    largest = 0
    try:
        for _ in range(300):
            await appender.probe(link({"ts": 1.0, "kind": "probe"}, "c", 0, GENESIS))
            await asyncio.sleep(0.001)  # the checkpoint runs on the worker thread meanwhile
            largest = max(largest, (tmp_path / "audit.db-wal").stat().st_size)
    finally:
        await appender.aclose()
    assert largest < 300 * 1024, f"the WAL grew to {largest / 1024:.0f} KiB over 300 probes"
