"""Applying a policy bundle to the store: atomically, as a new policy version that records
the bundle's content hash and, inside a git work tree, the commit and whether the tree
was dirty."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from ..policy_model import Rule
from ..store import identity as identity_store
from ..store import rules as rule_store
from .bundle import Bundle


@dataclass(frozen=True)
class GitInfo:
    commit: str | None
    dirty: bool | None


def git_info(directory: Path) -> GitInfo:
    """The commit the bundle's directory is at, and whether it has uncommitted changes there."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return GitInfo(None, None)
    return GitInfo(commit or None, bool(status.strip()))


@dataclass(frozen=True)
class Plan:
    """What applying a bundle would change."""

    added: list[Rule]
    removed: list[Rule]
    changed: list[tuple[Rule, Rule]]
    teams_added: list[str]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.teams_added)


def _comparable(rule: Rule) -> Rule:
    return Rule(**{**{f: getattr(rule, f) for f in rule.__dataclass_fields__}, "position": 0})


async def plan(engine: AsyncEngine, bundle: Bundle) -> Plan:
    live = {r.id: r for r in await rule_store.list_rules(engine)}
    new = {r.id: r for r in bundle.rules}
    teams = {t["id"] for t in await identity_store.list_teams(engine)}
    return Plan(
        added=[r for rid, r in new.items() if rid not in live],
        removed=[r for rid, r in live.items() if rid not in new],
        changed=[
            (live[rid], r)
            for rid, r in new.items()
            if rid in live and (_comparable(live[rid]) != _comparable(r) or live[rid].position != r.position)
        ],
        teams_added=sorted(set(bundle.teams) - teams),
    )


async def live_hash(engine: AsyncEngine) -> str | None:
    history = await rule_store.policy_history(engine, limit=1)
    return history[0]["content_hash"] if history else None


async def apply(engine: AsyncEngine, bundle: Bundle, directory: Path, actor: str, *, force: bool = False) -> int | None:
    """Make the bundle the live policy; returns the new policy version, or None if it already is.

    The same content is applied again when the stored rules no longer say what it says (a
    migration changed how rules are stored or read), so the files stay the source of truth."""
    if not force and await live_hash(engine) == bundle.content_hash and (await plan(engine, bundle)).empty:
        return None
    for team, description in bundle.teams.items():
        await identity_store.ensure_team(engine, team, description)
    info = await anyio.to_thread.run_sync(git_info, directory)
    return await rule_store.replace_all(
        engine, bundle.rules, actor, content_hash=bundle.content_hash, git_commit=info.commit, git_dirty=info.dirty
    )
