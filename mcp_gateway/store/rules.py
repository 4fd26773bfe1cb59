"""Rules and policy versions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..policy_model import Rule
from . import tables as t
from .identity import NotFound
from .state import bump


def _patterns(patterns: tuple[str, ...] | None) -> str | None:
    return orjson.dumps(list(patterns)).decode() if patterns is not None else None


def _decoded(text: str | None) -> tuple[str, ...] | None:
    return tuple(orjson.loads(text)) if text is not None else None


def _row(rule: Rule, source: str, now: float) -> dict[str, Any]:
    return {
        "id": rule.id,
        "team_id": rule.team,
        "position": rule.position,
        "effect": rule.effect,
        "servers": orjson.dumps(list(rule.servers)).decode(),
        # NULL: the rule does not name this kind (see `Rule`), which is not `["*"]`.
        "tools": _patterns(rule.tools),
        "prompts": _patterns(rule.prompts),
        "resources": _patterns(rule.resources),
        "arguments": orjson.dumps(rule.arguments).decode() if rule.arguments else None,
        "shadow": rule.shadow,
        "description": rule.description,
        "source": source,
        "created_at": now,
    }


def to_rule(row: dict[str, Any]) -> Rule:
    """A rule from its stored row (JSON text columns, as read from the `rules` table)."""
    return Rule(
        id=row["id"],
        team=row["team_id"],
        effect=row["effect"],
        servers=tuple(orjson.loads(row["servers"])),
        tools=_decoded(row["tools"]),
        prompts=_decoded(row["prompts"]),
        resources=_decoded(row["resources"]),
        arguments=orjson.loads(row["arguments"]) if row["arguments"] else None,
        shadow=bool(row["shadow"]),
        position=int(row["position"]),
        description=row.get("description") or "",
    )


async def _new_version(conn: AsyncConnection, actor: str, source: str, **extra: Any) -> int:
    await bump(conn, policy=True)
    version = (await conn.execute(select(t.state.c.policy_version))).scalar_one()
    await conn.execute(
        insert(t.policy_versions).values(
            version=version, created_at=time.time(), actor=actor, source=source, note=extra.pop("note", ""), **extra
        )
    )
    return int(version)


async def add_rule(engine: AsyncEngine, rule: Rule, actor: str) -> tuple[Rule, int]:
    """Append a rule to its team's list; returns it (with its position) and the new policy version."""
    async with engine.begin() as conn:
        exists = (await conn.execute(select(t.rules.c.id).where(t.rules.c.id == rule.id))).first()
        if exists:
            raise ValueError(f"rule {rule.id!r} already exists")
        last = (await conn.execute(select(func.max(t.rules.c.position)).where(t.rules.c.team_id == rule.team))).scalar()
        placed = replace(rule, position=(last or 0) + 1)
        await conn.execute(insert(t.rules).values(**_row(placed, "api", time.time())))
        version = await _new_version(conn, actor, "api", note=f"add rule {rule.id}")
        return placed, version


async def delete_rule(engine: AsyncEngine, rule_id: str, actor: str) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(delete(t.rules).where(t.rules.c.id == rule_id))
        if result.rowcount == 0:
            raise NotFound(f"no rule {rule_id!r}")
        return await _new_version(conn, actor, "api", note=f"delete rule {rule_id}")


async def replace_all(
    engine: AsyncEngine,
    rules: Sequence[Rule],
    actor: str,
    *,
    content_hash: str,
    git_commit: str | None,
    git_dirty: bool | None,
) -> int:
    """Swap the whole rule set for a bundle's, atomically; returns the new policy version."""
    now = time.time()
    async with engine.begin() as conn:
        await conn.execute(delete(t.rules))
        if rules:
            await conn.execute(insert(t.rules), [_row(rule, "bundle", now) for rule in rules])
        return await _new_version(
            conn, actor, "bundle", content_hash=content_hash, git_commit=git_commit, git_dirty=git_dirty
        )


async def list_rules(engine: AsyncEngine, team: str | None = None) -> list[Rule]:
    query = select(t.rules).order_by(t.rules.c.team_id, t.rules.c.position)
    if team is not None:
        query = query.where(t.rules.c.team_id == team)
    async with engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(query)]
    return [to_rule(row) for row in rows]


async def policy_history(engine: AsyncEngine, limit: int = 20) -> list[dict[str, Any]]:
    query = select(t.policy_versions).order_by(t.policy_versions.c.version.desc()).limit(limit)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]
