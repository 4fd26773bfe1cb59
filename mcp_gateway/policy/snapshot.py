"""The in-memory snapshot every decision reads, and how it keeps up with the store.

A snapshot is immutable and replaced whole. It is refreshed at once after a change made
through this process, by polling the store's state version every `poll_interval`, and
(on PostgreSQL) when another replica's NOTIFY arrives. If the store cannot be reached for
longer than `max_age`, the snapshot is stale and every decision denies; kill switches in
it stay engaged throughout.

A refresh is bounded (each read by the engine's `store_timeout`, the whole by twice that):
one that hangs fails, and the snapshot ages meanwhile. A snapshot is as fresh as the moment
its refresh began, not the moment it ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..identity import Principal
from ..policy_model import KillSwitch
from ..roles import Role
from ..store import rules as rule_store
from ..store import state as state_store
from .engine import PolicyState

log = logging.getLogger(__name__)


class AdminToken(NamedTuple):
    """An active admin token as the snapshot holds it."""

    digest: str
    name: str
    role: Role


@dataclass(frozen=True)
class PolicySnapshot:
    policy: PolicyState = field(default_factory=PolicyState)
    principals: dict[str, Principal] = field(default_factory=dict)
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    """key id -> (digest, principal id)"""
    admin_tokens: dict[str, AdminToken] = field(default_factory=dict)
    """token id -> the active (unrevoked) admin token"""

    @property
    def version(self) -> int:
        return self.policy.version


def switch_of(row: Mapping[str, Any]) -> KillSwitch:
    """A kill switch as the store holds it (a `kill_switches` row)."""
    return KillSwitch(
        id=row["id"],
        scope=row["scope"],
        target=row["target"],
        reason=row["reason"],
        actor=row["actor"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def build(rows: state_store.StateRows) -> PolicySnapshot:
    principals = {
        p["id"]: Principal(id=p["id"], team=p["team_id"], name=p["name"], kind=p["kind"])
        for p in rows.principals
        if not p["disabled"]
    }
    switches = [switch_of(s) for s in rows.switches]
    policy = PolicyState.build(
        (rule_store.to_rule(r) for r in rows.rules),
        switches,
        version=rows.version,
        policy_version=rows.policy_version,
    )
    return PolicySnapshot(
        policy=policy,
        principals=principals,
        keys={k["id"]: (k["hash"], k["principal_id"]) for k in rows.keys if k["principal_id"] in principals},
        admin_tokens=_admin_tokens(rows.admin_tokens),
    )


def _admin_tokens(rows: list[dict[str, Any]]) -> dict[str, AdminToken]:
    tokens = {}
    for row in rows:
        try:
            role = Role(row["role"])
        except ValueError:
            # Fail closed: a role this version does not know grants nothing.
            log.warning("admin token %s has an unknown role %r: it is refused", row["id"], row["role"])
            continue
        tokens[row["id"]] = AdminToken(row["hash"], row["name"], role)
    return tokens


SnapshotListener = Callable[[PolicySnapshot, PolicySnapshot], Awaitable[None]]


class Snapshots:
    """Holds the current snapshot and refreshes it."""

    def __init__(
        self, engine: AsyncEngine, *, max_age: float, poll_interval: float, timeout: float | None = None
    ) -> None:
        self.engine = engine
        self.max_age = max_age
        self.poll_interval = poll_interval
        self.timeout = timeout if timeout is not None else max(poll_interval * 5, 5.0)
        """Bound on one refresh."""
        self.current = PolicySnapshot()
        self.checked_at = float("-inf")
        """Monotonic time the snapshot was last confirmed current."""
        self.last_error: str | None = None
        self._listeners: list[SnapshotListener] = []
        self._wake = anyio.Event()
        self._lock = anyio.Lock()

    def subscribe(self, listener: SnapshotListener) -> None:
        self._listeners.append(listener)

    def stale(self) -> bool:
        return time.monotonic() - self.checked_at > self.max_age

    def age(self) -> float:
        return time.monotonic() - self.checked_at

    async def refresh(self, force: bool = False) -> bool:
        """Bring the snapshot up to date; False if the store could not be read."""
        async with self._lock:
            began = time.monotonic()
            try:
                with anyio.fail_after(self.timeout):
                    version, _ = await state_store.read_version(self.engine)
                    if force or version != self.current.version or self.checked_at == float("-inf"):
                        new = build(await state_store.load(self.engine))
                        old, self.current = self.current, new
                        if new.version != old.version:
                            log.info(
                                "snapshot %d -> %d (policy %d)", old.version, new.version, new.policy.policy_version
                            )
                        for listener in self._listeners:
                            await listener(old, new)
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                log.warning("snapshot refresh failed (age %.1fs): %s", self.age(), self.last_error)
                return False
            self.checked_at = max(self.checked_at, began)
            self.last_error = None
            return True

    def poke(self) -> None:
        """Ask the refresher to check now (a NOTIFY arrived)."""
        self._wake.set()

    async def run(self) -> None:
        """Poll the store's version until cancelled."""
        while True:
            with anyio.move_on_after(self.poll_interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            await self.refresh()
