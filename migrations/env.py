"""Alembic environment for mcp-gateway.

Run in-process by the gateway (`mcp-gateway db upgrade`, or `serve` on start), which
hands over a connection; or by the `alembic` command from the repository root, which
reads the URL from `MCP_GATEWAY_DATABASE_URL` or alembic.ini.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from mcp_gateway.store.engine import normalize_url, open_engine
from mcp_gateway.store.tables import metadata

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_url(url: str) -> None:
    engine = open_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = os.environ.get("MCP_GATEWAY_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set MCP_GATEWAY_DATABASE_URL (or sqlalchemy.url in alembic.ini)")
    asyncio.run(run_from_url(normalize_url(url)))
