"""Migrations and models never drift, on both stores; the wheel carries what it needs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mcp_gateway.store import current_revision, open_engine, upgrade

from ..support import ROOT

pytestmark = pytest.mark.anyio


def _alembic(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MCP_GATEWAY_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


async def test_alembic_upgrade_head_then_check_finds_no_drift(store_url: str) -> None:
    upgraded = _alembic("upgrade", "head", url=store_url)
    assert upgraded.returncode == 0, upgraded.stderr
    checked = _alembic("check", url=store_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr


async def test_upgrading_twice_is_harmless_and_lands_on_head(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        await upgrade(engine)
        first = await current_revision(engine)
        await upgrade(engine)
        assert await current_revision(engine) == first is not None
    finally:
        await engine.dispose()


def test_the_revision_the_gateway_expects_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from mcp_gateway.store.engine import HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


def test_the_wheel_ships_migrations_example_and_policies(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if built.returncode != 0 and "No module named 'hatchling'" in built.stderr:
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("mcp_gateway-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "mcp_gateway/migrations/env.py",
        "mcp_gateway/migrations/versions/0001_initial_schema.py",
        "mcp_gateway/examples/gateway.yaml",
        "mcp_gateway/examples/everything_server.py",
        "mcp_gateway/examples/everything_scenarios.py",  # imported by the server beside it
        "mcp_gateway/examples/tasks_tools.py",  # likewise
        "mcp_gateway/policies/local.yaml",
        "mcp_gateway/py.typed",
    ):
        assert required in names, required
