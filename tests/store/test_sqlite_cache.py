"""Every SQLite connection a running gateway holds has a small, fixed page cache: SQLite's
default (2,000 KiB each) grew the gateway's RSS by up to 14 MiB as the store grew."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from mcp_gateway.store.audit import SqliteAppender
from mcp_gateway.store.engine import SQLITE_CACHE_KIB, open_engine

pytestmark = pytest.mark.anyio


async def test_every_pooled_sqlite_connection_has_the_small_page_cache(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        async with engine.connect() as first, engine.connect() as second:
            sizes = [(await conn.execute(text("PRAGMA cache_size"))).scalar() for conn in (first, second)]
    finally:
        await engine.dispose()
    assert sizes == [-SQLITE_CACHE_KIB, -SQLITE_CACHE_KIB]


async def test_the_audit_writers_sqlite_connections_have_the_small_page_cache(tmp_path: Path) -> None:
    appender = SqliteAppender(str(tmp_path / "store.db"))
    try:
        fast, slow = appender._open(busy_ms=0), appender._open(busy_ms=5000)
        sizes = [conn.execute("PRAGMA cache_size").fetchone()[0] for conn in (fast, slow)]
        fast.close()
        slow.close()
    finally:
        await appender.aclose()
    assert sizes == [-SQLITE_CACHE_KIB, -SQLITE_CACHE_KIB]
    assert SQLITE_CACHE_KIB == 512  # the bound the README states: 7 connections, 3.5 MiB
