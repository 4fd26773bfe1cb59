"""Kill switches: engaged and released with who, why and until when."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from . import tables as t
from .identity import NotFound
from .state import bump


async def engage(
    engine: AsyncEngine, scope: str, target: str, actor: str, reason: str, expires_at: float | None
) -> dict[str, Any]:
    row = {
        "id": "ks_" + secrets.token_hex(6),
        "scope": scope,
        "target": target,
        "actor": actor,
        "reason": reason,
        "created_at": time.time(),
        "expires_at": expires_at,
        "released_at": None,
        "released_by": None,
        "release_reason": None,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(t.kill_switches).values(**row))
        await bump(conn)
    return row


async def release(engine: AsyncEngine, switch_id: str, actor: str, reason: str) -> dict[str, Any]:
    now = time.time()
    async with engine.begin() as conn:
        result = await conn.execute(
            update(t.kill_switches)
            .where(t.kill_switches.c.id == switch_id, t.kill_switches.c.released_at.is_(None))
            .values(released_at=now, released_by=actor, release_reason=reason)
        )
        if result.rowcount == 0:
            raise NotFound(f"no engaged kill switch {switch_id!r}")
        await bump(conn)
        row = (await conn.execute(select(t.kill_switches).where(t.kill_switches.c.id == switch_id))).one()
    return dict(row._mapping)


async def listing(
    engine: AsyncEngine, include_released: bool = False, now: float | None = None
) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    query = select(t.kill_switches).order_by(t.kill_switches.c.created_at.desc())
    if not include_released:
        query = query.where(
            t.kill_switches.c.released_at.is_(None),
            (t.kill_switches.c.expires_at.is_(None)) | (t.kill_switches.c.expires_at > now),
        )
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query.limit(1000))]
