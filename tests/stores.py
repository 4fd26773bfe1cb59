"""The two stores the governance tests run on: a SQLite file, and a fresh PostgreSQL
database on the machine's server (127.0.0.1:5432, trust auth), dropped afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

PG_HOST = os.environ.get("MCP_GATEWAY_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MCP_GATEWAY_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("MCP_GATEWAY_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("MCP_GATEWAY_TEST_PG_DB", "test")


def pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new, empty database for one test; its URL."""
    name = f"gw_test_{secrets.token_hex(6)}"
    try:
        admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        # Said in one line, not as a traceback from deep inside asyncpg.
        pytest.skip(
            f"PostgreSQL is not available at {PG_HOST}:{PG_PORT} (user {PG_USER}, database {PG_ADMIN_DB}): "
            f"{type(exc).__name__}: {exc}. Start it (see .ci/run) or set MCP_GATEWAY_TEST_PG_HOST/PORT/USER/DB."
        )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield pg_url(name)
    finally:
        admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def store_url(kind: str, directory: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'gateway.db'}"
    else:
        async with postgres_database() as url:
            yield url
