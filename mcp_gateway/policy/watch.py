"""Keeping the live policy in step with a directory of policy files.

`reload` validates the directory and applies it; an invalid bundle is reported (log,
status endpoint) and the live policy stays in force. `watch` polls the files' names,
sizes and modification times, and reloads when they change: no extra dependency, and a
change lands within a poll interval plus the time to apply it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConfigError
from . import bundle as policy_bundle
from .apply import apply
from .snapshot import Snapshots

log = logging.getLogger(__name__)


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class PolicyDirectory:
    """A policy directory and the outcome of its last reload."""

    def __init__(self, directory: Path, engine: AsyncEngine, snapshots: Snapshots) -> None:
        self.directory = directory
        self.engine = engine
        self.snapshots = snapshots
        self.status: dict[str, Any] = {"directory": str(directory), "error": None}
        self._lock = anyio.Lock()

    async def reload(self, actor: str) -> dict[str, Any]:
        async with self._lock:
            now = time.time()
            try:
                bundle = policy_bundle.load(self.directory)
                version = await apply(self.engine, bundle, self.directory, actor)
            except ConfigError as exc:
                problems = [str(p) for p in exc.problems]
                log.error(
                    "policy bundle in %s rejected; the live policy stays:\n  %s", self.directory, "\n  ".join(problems)
                )
                self.status = {**self.status, "error": problems, "error_at": now}
                return {"applied": False, "policy_version": None, "error": problems, "retry": False}
            except (SQLAlchemyError, OSError) as exc:
                message = f"the store refused the bundle: {str(exc).splitlines()[0]}"
                log.error("%s", message)
                self.status = {**self.status, "error": [message], "error_at": now}
                return {"applied": False, "policy_version": None, "error": [message], "retry": True}
            await self.snapshots.refresh(force=True)
            self.status = {
                "directory": str(self.directory),
                "error": None,
                "checked_at": now,
                "content_hash": bundle.content_hash,
                "policy_version": self.snapshots.current.policy.policy_version,
            }
            if version is not None:
                log.info("policy bundle %s applied as version %d", self.directory, version)
            return {
                "applied": version is not None,
                "policy_version": self.status["policy_version"],
                "error": None,
                "retry": False,
            }

    async def watch(self, interval: float = 0.5) -> None:
        """Reload whenever the directory's files change; a change the store refused is
        tried again until it lands (a change that is invalid waits for the next edit)."""
        seen = fingerprint(self.directory)
        while True:
            await anyio.sleep(interval)
            current = fingerprint(self.directory)
            if current != seen:
                outcome = await self.reload("mcp-gateway (watch)")
                if not outcome["retry"]:
                    seen = current
