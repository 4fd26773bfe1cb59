"""Every command fails in one line: a store that cannot be reached, a store URL the gateway
cannot use, a missing or broken policy directory at start, a reader that closes the pipe.
Each with the exit code the README's table gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..admin.common import mcp_gateway
from ..support import ALLOW_ALL, GatewayProcess, admin_client, create_key, serve, write_config, write_policies
from .common import closed_port, config_file, error_lines

pytestmark = pytest.mark.anyio

COMMANDS = [
    ["check"],
    ["serve", "--port", "0"],
    ["keys", "list"],
    ["audit", "verify"],
    ["audit", "anchor"],
    ["audit", "prune", "--before", "30d"],
    ["policy", "plan", "POLICIES"],
    ["db", "upgrade"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
async def test_a_store_that_cannot_be_reached_is_one_error_line_and_exit_3(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/gateway"
    config = config_file(tmp_path, {"database_url": url})
    policies = write_policies(tmp_path / "policies", ALLOW_ALL)
    command = [str(policies) if part == "POLICIES" else part for part in command]
    result = await mcp_gateway(*command, "--config", str(config))
    assert result.returncode == 3, result.stderr.decode()
    text = result.stderr.decode()
    assert "Traceback" not in text, text
    last = text.strip().splitlines()[-1]
    assert last.startswith("error: the store postgresql://postgres@127.0.0.1:") and "cannot be used" in last, text
    if command[0] != "serve":  # serve logs its start before it fails
        assert error_lines(result) == [last]


async def test_a_store_url_for_another_database_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    config = config_file(tmp_path, {"database_url": "mysql://gateway@db.internal/gateway"})
    result = await mcp_gateway("keys", "list", "--config", str(config))
    assert result.returncode == 2
    [line] = error_lines(result)
    assert line.startswith(f"error: {config}:3: gateway.database_url: mysql is not supported"), line


async def test_a_missing_policy_directory_is_one_line_at_its_config_line(tmp_path: Path) -> None:
    config = config_file(tmp_path, {"auth": "none", "policies": "no-such-dir"})
    result = await mcp_gateway("serve", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    [line] = error_lines(result)
    assert line == f"error: {config}:4: gateway.policies: {tmp_path / 'no-such-dir'} is not a directory"


async def test_serve_with_no_live_policy_refuses_an_invalid_directory_with_each_problem_at_its_line(
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "a.yaml").write_text("teams:\n  t:\n    rules:\n      - allow: {servers: [x], colour: red}\n")
    config = config_file(tmp_path, {"auth": "none", "policies": "policies"})
    result = await mcp_gateway("serve", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    assert error_lines(result) == [f"error: {policies / 'a.yaml'}:4: teams.t.rules.0.allow.colour: unknown field"]
    assert not (tmp_path / "mcp-gateway.db").exists()


async def test_serve_with_a_live_policy_starts_on_it_despite_an_invalid_directory(tmp_path: Path) -> None:
    policies = write_policies(tmp_path / "policies", ALLOW_ALL)
    config = config_file(tmp_path, {"auth": "none", "policies": "policies"})
    assert (await mcp_gateway("policy", "apply", str(policies), "--config", str(config))).returncode == 0
    (policies / "policy.yaml").write_text("teams: [\n")
    process = GatewayProcess(config)
    try:
        await process.start()
    finally:
        process.stop()
    assert "the live policy stays" in process.log.read_text()


def _closed_stdout(*args: str) -> tuple[int, str]:
    """Run `mcp-gateway ARGS` with its stdout's reader gone before it writes a byte, as
    `| head` leaves it once it has its lines."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mcp_gateway", *args], env=clean, stdout=write, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(write)
    return result.returncode, result.stderr.decode()


async def test_policy_schema_into_a_closed_pipe_ends_quietly_with_141() -> None:
    code, stderr = _closed_stdout("policy", "schema")
    assert (code, stderr) == (141, "")


async def test_audit_export_into_a_closed_pipe_ends_quietly_with_141(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, auth="keys", policies=None)
    async with serve(config) as (url, _):
        for i in range(3):
            await create_key(url, "alpha", f"bot-{i}")  # each an audited admin action
        async with admin_client(url) as admin:
            assert len((await admin.get("/audit")).json()["items"]) >= 3
    code, stderr = _closed_stdout("audit", "export", "--config", str(config))
    assert (code, stderr) == (141, "")


@pytest.mark.parametrize("group", ["policy", "keys", "audit", "db", "admin-token"])
async def test_a_command_group_named_alone_prints_its_commands_and_exits_2(group: str) -> None:
    result = await mcp_gateway(group)
    assert result.returncode == 2
    text = result.stderr.decode()
    assert text.startswith(f"usage: mcp-gateway {group} "), text
    assert "required" not in text


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--decision", "bogus"], "argument --decision: invalid choice: 'bogus' (choose from 'allow', 'deny')"),
        (["--kind", "bogus"], "argument --kind: invalid choice: 'bogus'"),
        (["--since", "yesterday"], "argument --since: 'yesterday' is not a time: give epoch seconds"),
        (["-n", "0"], "argument -n: '0' is not a whole number of rows"),
    ],
    ids=["decision", "kind", "since", "n"],
)
async def test_a_filter_value_that_cannot_match_is_a_usage_error(
    tmp_path: Path, flags: list[str], expected: str
) -> None:
    config = config_file(tmp_path, {"auth": "none"})
    assert (await mcp_gateway("db", "upgrade", "--config", str(config))).returncode == 0
    result = await mcp_gateway("audit", "tail", "--config", str(config), *flags)
    assert result.returncode == 2
    assert expected in result.stderr.decode().splitlines()[-1], result.stderr.decode()
    assert result.stdout == b""
