"""Running it for real: `mcp-gateway init DIR` writes the example gateway out of the
installed package, and the wheel carries it; `serve` says at start what it runs (config,
auth mode, store with credentials masked, policy version), and libraries' routine lines
(Alembic's migrations, aiosqlite's queries) stay out of its log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ..stores import PG_HOST, PG_PORT, PG_USER, postgres_database
from ..support import ROOT, GatewayProcess, write_config
from .common import error_lines

pytestmark = pytest.mark.anyio


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "mcp_gateway", *args], capture_output=True, env=env, cwd=cwd, timeout=120
    )


def test_init_writes_the_example_gateway_and_a_client_snippet_with_absolute_paths(tmp_path: Path) -> None:
    target = tmp_path / "gw"
    result = cli("init", str(target))
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "everything_scenarios.py",  # imported by the example upstream
        "everything_server.py",
        "gateway.yaml",
        "policies/local.yaml",
        "tasks_tools.py",  # likewise
    ]
    assert "policies: policies" in (target / "gateway.yaml").read_text()
    out = result.stdout.decode()
    snippet = json.loads(out[out.index("{") :])
    server = snippet["mcpServers"]["gateway"]
    assert server["args"] == ["stdio", "--config", str(target / "gateway.yaml")]
    assert Path(server["command"]).is_absolute() or server["command"] == "mcp-gateway"


def test_init_refuses_to_overwrite_in_one_line_unless_forced(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path)).returncode == 0
    (tmp_path / "gateway.yaml").write_text("# mine\n")
    again = cli("init", str(tmp_path))
    assert again.returncode == 2
    [line] = error_lines(again)
    assert "gateway.yaml exists already (--force overwrites)" in line
    assert (tmp_path / "gateway.yaml").read_text() == "# mine\n"
    assert cli("init", str(tmp_path), "--force").returncode == 0


def test_the_initialised_example_passes_check_with_its_upstream_and_policies(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path)).returncode == 0
    result = cli("check", "--config", str(tmp_path / "gateway.yaml"))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    out = result.stdout.decode()
    assert "everything: ready" in out and "everything__echo" in out


def test_the_wheel_carries_the_example_migrations_and_policies_but_no_store(tmp_path: Path) -> None:
    # A copy of the project, with the store a quickstart in a checkout leaves behind.
    source = tmp_path / "project"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("mcp_gateway", "migrations", "examples", "policies"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    (source / "examples" / "mcp-gateway.db").touch()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    [wheel] = tmp_path.glob("mcp_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "mcp_gateway/examples/gateway.yaml",
        "mcp_gateway/examples/everything_server.py",
        "mcp_gateway/examples/everything_scenarios.py",
        "mcp_gateway/examples/tasks_tools.py",
        "mcp_gateway/policies/local.yaml",
        "mcp_gateway/migrations/env.py",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.endswith((".db", ".db-wal", ".db-shm"))]


async def test_serve_logs_what_it_runs_and_no_alembic_or_aiosqlite_lines(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
    gateway = GatewayProcess(config, "--log-level", "debug")
    await gateway.start()
    gateway.stop()
    log = gateway.log.read_text()
    assert f"started: config {config}, auth none, store sqlite:///{tmp_path / 'fresh.db'}, policy version 1" in log
    assert "alembic" not in log, log
    assert "aiosqlite" not in log, log


async def test_serve_names_a_postgres_store_with_its_password_masked(tmp_path: Path) -> None:
    async with postgres_database() as url:
        database = url.rsplit("/", 1)[1]
        with_password = f"postgresql://{PG_USER}:s3cret-pw@{PG_HOST}:{PG_PORT}/{database}"
        config = write_config(tmp_path, {}, database_url={"$env": "GW_TEST_STORE"}, auth="keys")
        gateway = GatewayProcess(config, env={"GW_TEST_STORE": with_password})
        await gateway.start()
        gateway.stop()
    log = gateway.log.read_text()
    assert f"auth keys, store postgresql://{PG_USER}:***@{PG_HOST}:{PG_PORT}/{database}, policy version 0" in log
    assert "s3cret-pw" not in log
