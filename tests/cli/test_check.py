"""`mcp-gateway check` only looks: it migrates nothing, applies no policy version, creates
no store, and so never writes into the repository when pointed at the example."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mcp_gateway.store.engine import HEAD

from ..admin.common import mcp_gateway
from ..support import ALLOW_ALL, ROOT, write_policies
from .common import config_file

pytestmark = pytest.mark.anyio


def _tree(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


def _count(database: Path, table: str) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_check_run_twice_adds_no_policy_version_and_no_row(tmp_path: Path) -> None:
    write_policies(tmp_path / "policies", ALLOW_ALL)
    config = config_file(tmp_path, {"auth": "none", "policies": "policies"})
    assert (await mcp_gateway("db", "upgrade", "--config", str(config))).returncode == 0
    database = tmp_path / "mcp-gateway.db"
    before = {table: _count(database, table) for table in ("policy_versions", "rules", "audit", "teams")}
    results = [await mcp_gateway("check", "--config", str(config)) for _ in range(2)]
    after = {table: _count(database, table) for table in before}
    assert after == before == {"policy_versions": 0, "rules": 0, "audit": 0, "teams": 0}
    for result in results:
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        assert f"at revision {HEAD} (current)".encode() in result.stdout
        assert b"1 rule(s) for 1 team(s)" in result.stdout


async def test_check_creates_no_store_where_there_is_none(tmp_path: Path) -> None:
    config = config_file(tmp_path, {"auth": "none"})
    result = await mcp_gateway("check", "--config", str(config))
    assert sorted(_tree(tmp_path)) == ["gateway.yaml"]
    assert result.returncode == 0, result.stderr.decode()
    assert b"does not exist yet" in result.stdout


async def test_check_of_the_example_config_writes_nothing_into_the_repository() -> None:
    watched = {name: _tree(ROOT / name) for name in ("examples", "policies")}
    result = await mcp_gateway("check", "--config", str(ROOT / "examples" / "gateway.yaml"))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert {name: _tree(ROOT / name) for name in watched} == watched
