"""Audit rows: appended in batches by the single writer, read by the admin API and the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from . import tables as t

COLUMNS = tuple(str(c.name) for c in t.audit.columns)
CONTENT_COLUMNS = tuple(c for c in COLUMNS if c not in ("seq", "hash"))
"""What a row's hash covers: everything but the database's own sequence and the hash itself."""


async def append(engine: AsyncEngine, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows in one transaction: the group commit."""
    async with engine.begin() as conn:
        await conn.execute(insert(t.audit), list(rows))


async def chain_head(engine: AsyncEngine, chain: str) -> tuple[int, str] | None:
    """The last (chain_seq, hash) of a chain, or None if it has no rows yet."""
    query = (
        select(t.audit.c.chain_seq, t.audit.c.hash)
        .where(t.audit.c.chain == chain)
        .order_by(t.audit.c.chain_seq.desc())
        .limit(1)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return (int(row.chain_seq), str(row.hash)) if row is not None else None


@dataclass
class Filters:
    since: float | None = None
    until: float | None = None
    team: str | None = None
    principal: str | None = None
    server: str | None = None
    tool: str | None = None
    decision: str | None = None
    kind: str | None = None


def _where(query: Any, f: Filters) -> Any:
    c = t.audit.c
    if f.since is not None:
        query = query.where(c.ts >= f.since)
    if f.until is not None:
        query = query.where(c.ts < f.until)
    for column, value in (
        (c.team_id, f.team),
        (c.principal_id, f.principal),
        (c.server, f.server),
        (c.tool, f.tool),
        (c.decision, f.decision),
        (c.kind, f.kind),
    ):
        if value is not None:
            query = query.where(column == value)
    return query


async def query(engine: AsyncEngine, filters: Filters, *, before: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first; `before` is the cursor (a `seq`) from the previous page."""
    q = _where(select(t.audit), filters)
    if before is not None:
        q = q.where(t.audit.c.seq < before)
    q = q.order_by(t.audit.c.seq.desc()).limit(limit)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(q)]


async def ascending(engine: AsyncEngine, filters: Filters, *, after: int = 0, page: int = 1000) -> AsyncIterator[dict[str, Any]]:
    """Every matching row, oldest first, in pages."""
    while True:
        q = _where(select(t.audit), filters).where(t.audit.c.seq > after).order_by(t.audit.c.seq).limit(page)
        async with engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(q)]
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after = rows[-1]["seq"]


async def by_chain(engine: AsyncEngine, page: int = 1000) -> AsyncIterator[dict[str, Any]]:
    """Every row, chain by chain, in chain order: what `verify` walks."""
    c = t.audit.c
    async with engine.connect() as conn:
        chains = [r[0] for r in await conn.execute(select(c.chain).distinct().order_by(c.chain))]
    for chain in chains:
        last = -1
        while True:
            q = select(t.audit).where(c.chain == chain, c.chain_seq > last).order_by(c.chain_seq).limit(page)
            async with engine.connect() as conn:
                rows = [dict(r._mapping) for r in await conn.execute(q)]
            for row in rows:
                yield row
            if len(rows) < page:
                break
            last = rows[-1]["chain_seq"]
