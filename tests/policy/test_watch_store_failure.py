"""A saved bundle the store could not take at that moment (SQLite locked by another
writer) is still applied once the store takes writes again: the watcher does not forget
a change because one attempt failed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..support import agent, serve, wait_ready, write_policies
from .live import ALLOW, DENY_ECHO, eventually, get, outcome, policy_gateway

pytestmark = pytest.mark.anyio


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Hold SQLite's write lock, as a long transaction of another process would."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


async def test_a_change_the_store_refused_is_applied_once_the_store_recovers(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    policies = write_policies(tmp_path / "policies", ALLOW)
    config = policy_gateway(tmp_path, f"sqlite:///{database}", watch=True)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        v1 = (await get(url, "/policy"))["policy_version"]

        async def refused() -> list[str] | None:
            error = (await get(url, "/status"))["policy_reload"]["error"]
            return error if error and "the store refused the bundle" in error[0] else None

        with write_locked(database):
            write_policies(policies, DENY_ECHO)
            await eventually(refused, "the apply to fail on the locked store", bound=30)
        assert (await get(url, "/policy"))["policy_version"] == v1

        async def applied() -> int | None:
            version: int = (await get(url, "/policy"))["policy_version"]
            return version if version > v1 else None

        v2 = await eventually(applied, "the saved bundle to be applied after the store recovered")
        async with agent(url) as client:
            assert (await outcome(client, "x__echo", {"text": "x"}))["denied"]["policy_version"] == v2
