"""The version every replica watches, and the full governance state a snapshot is built from."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import tables as t

CHANNEL = "mcp_gateway_state"
"""The PostgreSQL NOTIFY channel on which every change to the state version is announced."""


@dataclass(frozen=True)
class StateRows:
    """Raw rows for one snapshot."""

    version: int
    policy_version: int
    principals: list[dict[str, Any]]
    keys: list[dict[str, Any]]
    admin_tokens: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    switches: list[dict[str, Any]]


async def read_version(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(t.state.c.version, t.state.c.policy_version))).one()
    return int(row.version), int(row.policy_version)


async def seal_key(engine: AsyncEngine) -> bytes:
    """The replicas' shared key for sealing request states; made here if none is stored yet
    (when replicas start together, the first write wins and all read it back). Read first:
    a store that holds one is not written, so a gateway on a store it cannot write starts
    (and reports, not ready, that its audit cannot be written)."""
    stored = await _stored_seal_key(engine)
    if stored is None:
        async with engine.begin() as conn:
            await conn.execute(
                update(t.state)
                .where(t.state.c.id == 1, t.state.c.seal_key.is_(None))
                .values(seal_key=secrets.token_hex(32))
            )
        stored = await _stored_seal_key(engine)
    assert stored is not None
    return bytes.fromhex(stored)


async def _stored_seal_key(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        stored = (await conn.execute(select(t.state.c.seal_key).where(t.state.c.id == 1))).scalar_one()
    return None if stored is None else str(stored)


async def bump(conn: AsyncConnection, *, policy: bool = False) -> int:
    """Advance the state version (and the policy version for rule changes); returns the new state version."""
    values: dict[str, Any] = {"version": t.state.c.version + 1, "updated_at": time.time()}
    if policy:
        values["policy_version"] = t.state.c.policy_version + 1
    result = await conn.execute(update(t.state).where(t.state.c.id == 1).values(**values).returning(t.state.c.version))
    version = int(result.scalar_one())
    if conn.dialect.name == "postgresql":
        # Delivered to every listening replica when this transaction commits, not before.
        await conn.execute(text("SELECT pg_notify(:channel, :version)"), {"channel": CHANNEL, "version": str(version)})
    return version


async def load(engine: AsyncEngine, now: float | None = None) -> StateRows:
    """Everything a snapshot needs, read in one transaction so it is consistent."""
    now = time.time() if now is None else now
    async with engine.connect() as conn:
        version_row = (await conn.execute(select(t.state.c.version, t.state.c.policy_version))).one()
        principals = [dict(r._mapping) for r in await conn.execute(select(t.principals))]
        keys = [
            dict(r._mapping)
            for r in await conn.execute(
                select(t.api_keys.c.id, t.api_keys.c.hash, t.api_keys.c.principal_id).where(
                    t.api_keys.c.revoked_at.is_(None)
                )
            )
        ]
        admin = [
            dict(r._mapping)
            for r in await conn.execute(
                select(t.admin_tokens.c.id, t.admin_tokens.c.hash, t.admin_tokens.c.name, t.admin_tokens.c.role).where(
                    t.admin_tokens.c.revoked_at.is_(None)
                )
            )
        ]
        rules = [dict(r._mapping) for r in await conn.execute(select(t.rules).order_by(t.rules.c.position))]
        switches = [
            dict(r._mapping)
            for r in await conn.execute(
                select(t.kill_switches).where(
                    t.kill_switches.c.released_at.is_(None),
                    (t.kill_switches.c.expires_at.is_(None)) | (t.kill_switches.c.expires_at > now),
                )
            )
        ]
    return StateRows(
        int(version_row.version), int(version_row.policy_version), principals, keys, admin, rules, switches
    )
