"""Dashboard sessions: one row per login, found by the digest of the cookie's session id.

The row never holds a usable token: `sealed` is encrypted with a key only the cookie
carries (see `dashboard.login`). Expired rows go when the next session is opened, and live
ones are capped, oldest first, so logins cannot grow the table without bound."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from . import tables as t

MAX_SESSIONS = 10_000
"""Live dashboard sessions kept at most; past it the oldest are ended."""


async def open_session(
    engine: AsyncEngine, digest: str, sealed: str | None, csrf: str, now: float, expires_at: float
) -> None:
    s = t.dashboard_sessions
    async with engine.begin() as conn:
        await conn.execute(delete(s).where(s.c.expires_at <= now))
        await conn.execute(insert(s).values(id=digest, sealed=sealed, csrf=csrf, created_at=now, expires_at=expires_at))
        live = (await conn.execute(select(func.count()).select_from(s))).scalar_one()
        if live > MAX_SESSIONS:
            oldest = select(s.c.id).order_by(s.c.created_at).limit(live - MAX_SESSIONS).scalar_subquery()
            await conn.execute(delete(s).where(s.c.id.in_(oldest)))


async def find_session(engine: AsyncEngine, digest: str, now: float) -> tuple[str | None, str] | None:
    """The session's sealed token and CSRF token, or None (unknown, ended or expired)."""
    s = t.dashboard_sessions
    async with engine.connect() as conn:
        row = (await conn.execute(select(s.c.sealed, s.c.csrf).where(s.c.id == digest, s.c.expires_at > now))).first()
    return None if row is None else (row.sealed, row.csrf)


async def end_session(engine: AsyncEngine, digest: str) -> None:
    s = t.dashboard_sessions
    async with engine.begin() as conn:
        await conn.execute(delete(s).where(s.c.id == digest))
