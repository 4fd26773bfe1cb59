"""Dashboard sessions: one row per login, found by the digest of the cookie's session id.

The row never holds a usable token: `sealed` is encrypted with a key only the cookie
carries (see `dashboard.login`). Expired rows go when the next session is opened, and live
ones are capped, oldest first, so logins cannot grow the table without bound: each
operator's among its own first, so no one's logins end another operator's session."""

from __future__ import annotations

from sqlalchemy import ColumnElement, delete, func, insert, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import tables as t

MAX_SESSIONS = 10_000
"""Live dashboard sessions kept at most; past it the oldest are ended."""
MAX_OPERATOR_SESSIONS = 50
"""Live sessions one operator keeps at most; past it its own oldest are ended. So an
operator logging in again and again (a `viewer` token's holder, say) ends only its own
sessions: reaching `MAX_SESSIONS` takes that many operators each at this cap."""


async def open_session(
    engine: AsyncEngine,
    digest: str,
    operator: str,
    sealed: str | None,
    now: float,
    expires_at: float,
) -> None:
    s = t.dashboard_sessions
    async with engine.begin() as conn:
        await conn.execute(delete(s).where(s.c.expires_at <= now))
        await conn.execute(
            insert(s).values(id=digest, operator=operator, sealed=sealed, created_at=now, expires_at=expires_at)
        )
        if sealed is not None:
            # The local admin (no token) is alone on its gateway, which has no tokens at all:
            # only the overall cap, so a script polling the page ends no browser's session.
            await _cap(conn, s.c.operator == operator, MAX_OPERATOR_SESSIONS)
        await _cap(conn, true(), MAX_SESSIONS)


async def _cap(conn: AsyncConnection, which: ColumnElement[bool], most: int) -> None:
    """End the oldest of the sessions `which` selects past `most`."""
    s = t.dashboard_sessions
    live = (await conn.execute(select(func.count()).select_from(s).where(which))).scalar_one()
    if live > most:
        oldest = select(s.c.id).where(which).order_by(s.c.created_at).limit(live - most).scalar_subquery()
        await conn.execute(delete(s).where(s.c.id.in_(oldest)))


async def find_session(engine: AsyncEngine, digest: str, now: float) -> tuple[bool, str | None]:
    """Whether the session is live (not unknown, ended or expired), and its sealed token."""
    s = t.dashboard_sessions
    async with engine.connect() as conn:
        row = (await conn.execute(select(s.c.sealed).where(s.c.id == digest, s.c.expires_at > now))).first()
    return (False, None) if row is None else (True, row.sealed)


async def end_session(engine: AsyncEngine, digest: str) -> None:
    s = t.dashboard_sessions
    async with engine.begin() as conn:
        await conn.execute(delete(s).where(s.c.id == digest))
