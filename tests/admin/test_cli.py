"""The operator's commands against a store a running gateway writes to, on both stores:
`keys create | list | revoke` change what the gateway accepts, and `audit tail | export`
print the rows the gateway wrote."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_gateway.store.audit import COLUMNS

from ..support import admin_client, agent, raw_client, serve, stdio_upstream, wait_ready, write_config, write_policies
from .common import completions, mcp_gateway, settled_audit

pytestmark = pytest.mark.anyio

POLICY = {"teams": {"platform": {"rules": [{"id": "platform-x", "allow": {"servers": ["x"]}}]}}}
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


@pytest.fixture
async def running(tmp_path: Path, store_url: str) -> AsyncIterator[tuple[Path, str]]:
    """A gateway with API keys; its config file (for the commands) and its /mcp URL."""
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(
        tmp_path,
        {"x": stdio_upstream()},
        auth="keys",
        policies="policies",
        database_url=store_url,
        snapshot_poll_interval=0.2,
    )
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield config, url


async def _until_authentication_is(url: str, key: str, accepted: bool) -> None:
    """Wait for the gateway to pick up a change another process made in the store."""
    async with raw_client(url) as http:
        with anyio.fail_after(15):
            while True:
                response = await http.post("/mcp", json=PING, headers={"Authorization": f"Bearer {key}"})
                if (response.status_code != 401) == accepted:
                    return
                await anyio.sleep(0.05)


async def _cli(config: Path, *args: str) -> tuple[str, str]:
    done = await mcp_gateway(*args, "--config", str(config))
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr.decode()}"
    return done.stdout.decode(), done.stderr.decode()


async def test_keys_made_listed_and_revoked_by_the_cli_hold_on_the_running_gateway(running: tuple[Path, str]) -> None:
    config, url = running
    key, note = await _cli(config, "keys", "create", "--team", "platform", "--name", "ci-bot")
    key = key.strip()
    key_id = key.split("_")[1]
    assert key.startswith("mgw_") and f"created key {key_id} for platform/ci-bot" in note

    await _until_authentication_is(url, key, accepted=True)
    async with agent(url, key) as client:
        result = await client.call_tool("x__echo", {"text": "made by the cli"})
    assert result.structured_content == {"text": "made by the cli"}

    listed, _ = await _cli(config, "keys", "list")
    assert listed.splitlines() == [f"{key_id}  platform/ci-bot  active"]
    assert key.split("_", 2)[2] not in listed

    revoked, _ = await _cli(config, "keys", "revoke", key_id)
    assert revoked.strip() == f"revoked {key_id}"
    await _until_authentication_is(url, key, accepted=False)
    listed, _ = await _cli(config, "keys", "list", "--principal", "platform/ci-bot")
    assert listed.splitlines() == [f"{key_id}  platform/ci-bot  revoked"]

    again = await mcp_gateway("keys", "revoke", key_id, "--config", str(config))
    assert again.returncode == 1 and key_id in again.stderr.decode()


@pytest.fixture
async def audited(running: tuple[Path, str]) -> tuple[Path, list[dict[str, Any]]]:
    """Four calls through the gateway; the config, and every audit row, oldest first."""
    config, url = running
    async with admin_client(url) as admin:
        key = (await admin.post("/keys", json={"team": "platform", "name": "ci-bot"})).json()["key"]
        async with agent(url, key) as client:
            for i in range(4):
                await client.call_tool("x__echo", {"text": f"call {i}"})
        rows = list(reversed(await settled_audit(admin, completions(4))))
    assert [r["kind"] for r in rows] == ["admin"] + ["decision", "completion"] * 4
    return config, rows


async def test_audit_tail_prints_the_newest_rows_oldest_first(audited: tuple[Path, list[dict[str, Any]]]) -> None:
    config, rows = audited
    tail, _ = await _cli(config, "audit", "tail", "-n", "3")
    lines = tail.splitlines()
    assert len(lines) == 3
    assert (
        [line.split("  ")[1] for line in lines]
        == [r["kind"] for r in rows[-3:]]
        == ["completion", "decision", "completion"]
    )
    assert "platform/ci-bot" in lines[-1] and "x/echo" in lines[-1] and "ok" in lines[-1]


async def test_audit_export_ndjson_is_every_row_with_every_column(audited: tuple[Path, list[dict[str, Any]]]) -> None:
    config, rows = audited
    ndjson, note = await _cli(config, "audit", "export", "--format", "ndjson")
    exported = [json.loads(line) for line in ndjson.splitlines()]
    assert note.strip() == f"exported {len(rows)} row(s)"
    assert exported == rows, "every row, oldest first, every column"
    assert all(list(row) == list(COLUMNS) for row in exported)


async def test_audit_export_csv_has_a_header_and_a_line_per_row(audited: tuple[Path, list[dict[str, Any]]]) -> None:
    config, rows = audited
    team_rows = [r for r in rows if r["team_id"] == "platform"]
    text, note = await _cli(config, "audit", "export", "--format", "csv", "--team", "platform")
    table = list(csv.reader(io.StringIO(text)))
    assert note.strip() == f"exported {len(team_rows)} row(s)"
    assert table[0] == list(COLUMNS)
    assert [int(line[0]) for line in table[1:]] == [r["seq"] for r in team_rows]
    by_name = [dict(zip(table[0], line, strict=True)) for line in table[1:]]
    assert {row["team_id"] for row in by_name} == {"platform"}
    for row, original in zip(by_name, team_rows, strict=True):
        assert (row["arguments"], row["hash"], row["kind"]) == (
            original["arguments"] or "",
            original["hash"],
            original["kind"],
        )

    verified, _ = await _cli(config, "audit", "verify")
    assert verified.startswith(f"ok: {len(rows)} row(s)")
