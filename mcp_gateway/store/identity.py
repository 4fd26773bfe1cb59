"""Teams, principals, API keys and admin tokens. Keys and tokens are stored as SHA-256
digests only: they are 256-bit random secrets, so a fast hash is the right one."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..roles import Role
from . import tables as t
from .state import bump


class NotFound(LookupError):
    pass


async def ensure_team(engine: AsyncEngine, team: str, description: str = "") -> bool:
    """Create the team if it does not exist; True if created."""
    async with engine.begin() as conn:
        exists = (await conn.execute(select(t.teams.c.id).where(t.teams.c.id == team))).first()
        if exists:
            return False
        await conn.execute(insert(t.teams).values(id=team, description=description, created_at=time.time()))
        await bump(conn)
        return True


async def list_teams(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(select(t.teams).order_by(t.teams.c.id))]


async def ensure_principal(engine: AsyncEngine, team: str, name: str, kind: str = "agent") -> dict[str, Any]:
    """The principal `name` of `team`, created (with the team) if needed."""
    await ensure_team(engine, team)
    principal_id = f"{team}/{name}"
    async with engine.begin() as conn:
        row = (await conn.execute(select(t.principals).where(t.principals.c.id == principal_id))).first()
        if row is not None:
            return dict(row._mapping)
        values = {
            "id": principal_id,
            "team_id": team,
            "name": name,
            "kind": kind,
            "created_at": time.time(),
            "disabled": False,
        }
        try:
            await conn.execute(insert(t.principals).values(**values))
        except IntegrityError:
            raise ValueError(f"principal {principal_id!r} already exists") from None
        await bump(conn)
        return values


async def list_principals(engine: AsyncEngine, team: str | None = None) -> list[dict[str, Any]]:
    query = select(t.principals).order_by(t.principals.c.id)
    if team is not None:
        query = query.where(t.principals.c.team_id == team)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def add_key(engine: AsyncEngine, key_id: str, digest: str, principal_id: str) -> None:
    async with engine.begin() as conn:
        found = (await conn.execute(select(t.principals.c.id).where(t.principals.c.id == principal_id))).first()
        if found is None:
            raise NotFound(f"no principal {principal_id!r}")
        await conn.execute(
            insert(t.api_keys).values(id=key_id, hash=digest, principal_id=principal_id, created_at=time.time())
        )
        await bump(conn)


async def list_keys(engine: AsyncEngine, principal_id: str | None = None) -> list[dict[str, Any]]:
    query = select(t.api_keys.c.id, t.api_keys.c.principal_id, t.api_keys.c.created_at, t.api_keys.c.revoked_at)
    if principal_id is not None:
        query = query.where(t.api_keys.c.principal_id == principal_id)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query.order_by(t.api_keys.c.created_at))]


async def revoke_key(engine: AsyncEngine, key_id: str) -> None:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(t.api_keys)
            .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
        if result.rowcount == 0:
            raise NotFound(f"no active key {key_id!r}")
        await bump(conn)


async def add_admin_token(engine: AsyncEngine, token_id: str, name: str, digest: str, role: Role) -> dict[str, Any]:
    """Store a new admin token (its digest only); returns its listing row."""
    values = {
        "id": token_id,
        "name": name,
        "role": role.value,
        "created_at": time.time(),
        "revoked_at": None,
        "last_used_at": None,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(t.admin_tokens).values(hash=digest, **values))
        await bump(conn)
    return values


async def list_admin_tokens(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Every admin token made in the store, revoked ones too (never their digests), oldest first."""
    c = t.admin_tokens.c
    query = select(c.id, c.name, c.role, c.created_at, c.revoked_at, c.last_used_at).order_by(c.created_at, c.id)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def note_admin_token_use(engine: AsyncEngine, token_id: str, when: float) -> None:
    """Record that a token was used. The state version does not move: no snapshot depends on it."""
    async with engine.begin() as conn:
        await conn.execute(update(t.admin_tokens).where(t.admin_tokens.c.id == token_id).values(last_used_at=when))


async def revoke_admin_token(engine: AsyncEngine, token_id: str) -> None:
    """Revoke an admin token. The state version moves, so every replica's snapshot drops it
    the way it drops a revoked key (at once here, by NOTIFY or polling elsewhere)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(t.admin_tokens)
            .where(t.admin_tokens.c.id == token_id, t.admin_tokens.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
        if result.rowcount == 0:
            raise NotFound(f"no active admin token {token_id!r}")
        await bump(conn)
