"""What an audit row keeps, on both stores: arguments with secret-looking fields redacted at
any depth, capped in size, or only their digest; and admin actions, recorded with their
actor before they take effect, and not taken at all when they cannot be recorded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ..governance.test_fail_closed import ACCEPT, REJECT, sql
from ..support import admin_client, agent, serve, stdio_upstream, wait_ready, write_config
from .common import completions, mcp_gateway, settled_audit

pytestmark = pytest.mark.anyio

SECRETS = ("hunter2", "sk-live-123", "Bearer abc.def", "tok-42", "s3ss10n")
ARGUMENTS = {
    "text": "visible",
    "password": SECRETS[0],
    "config": {
        "api_key": SECRETS[1],
        "hosts": [{"name": "db", "Authorization": SECRETS[2]}, {"name": "cache", "refresh_token": SECRETS[3]}],
        "retries": 3,
    },
    "Cookie": SECRETS[4],
}
REDACTED = {
    "text": "visible",
    "password": "[REDACTED]",
    "config": {
        "api_key": "[REDACTED]",
        "hosts": [{"name": "db", "Authorization": "[REDACTED]"}, {"name": "cache", "refresh_token": "[REDACTED]"}],
        "retries": 3,
    },
    "Cookie": "[REDACTED]",
}


@asynccontextmanager
async def gateway(directory: Path, store_url: str, **settings: Any) -> AsyncIterator[str]:
    config = write_config(directory, {"x": stdio_upstream()}, database_url=store_url, **settings)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url


async def _decisions(url: str, *calls: dict[str, Any]) -> list[dict[str, Any]]:
    """Call x__echo with each of `calls`; their decision rows, oldest first."""
    async with agent(url) as client:
        for arguments in calls:
            result = await client.call_tool("x__echo", arguments)
            assert not result.is_error, result
    async with admin_client(url) as admin:
        rows = await settled_audit(admin, completions(len(calls)))
    return [r for r in reversed(rows) if r["kind"] == "decision"]


def _sha256(arguments: dict[str, Any]) -> str:
    """The documented digest: SHA-256 of the redacted arguments as compact JSON with sorted keys."""
    return hashlib.sha256(json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def test_secret_looking_arguments_are_redacted_at_any_depth(tmp_path: Path, store_url: str) -> None:
    async with gateway(tmp_path, store_url) as url:
        [row] = await _decisions(url, ARGUMENTS)
    assert json.loads(row["arguments"]) == REDACTED
    assert row["args_digest"] == _sha256(REDACTED)  # a guessed secret cannot be confirmed from it
    for secret in SECRETS:
        assert secret not in json.dumps(row), secret


async def test_arguments_over_the_cap_are_kept_as_a_truncated_preview(tmp_path: Path, store_url: str) -> None:
    big = {"text": "a" * 1000, "token": "t" * 50}
    async with gateway(tmp_path, store_url, audit_max_argument_bytes=200) as url:
        small, large = await _decisions(url, {"text": "fits"}, big)
    assert json.loads(small["arguments"]) == {"text": "fits"}
    stored = json.loads(large["arguments"])
    assert stored["_truncated"] is True
    full = json.dumps({"text": "a" * 1000, "token": "[REDACTED]"}, separators=(",", ":"))
    assert 0 < len(stored["preview"]) <= 200 and full.startswith(stored["preview"])
    redacted_big = {"text": "a" * 1000, "token": "[REDACTED]"}
    assert large["args_digest"] == _sha256(redacted_big), "the digest covers the whole (redacted) arguments"


async def test_the_cap_counts_bytes_not_characters(tmp_path: Path, store_url: str) -> None:
    """`audit_max_argument_bytes` is a size in bytes: 150 two-byte characters (300 bytes
    of UTF-8) are over a 200-byte cap."""
    wide = {"text": "é" * 150}
    async with gateway(tmp_path, store_url, audit_max_argument_bytes=200) as url:
        [row] = await _decisions(url, wide)
    stored = json.loads(row["arguments"])
    assert stored.get("_truncated") is True, f"{len(row['arguments'].encode())} bytes stored whole"
    assert len(stored["preview"].encode()) <= 200


async def test_digest_mode_keeps_no_arguments_and_identical_arguments_match(tmp_path: Path, store_url: str) -> None:
    first, same_reordered, other, other_password = (
        {"text": "same", "password": "p"},
        {"password": "p", "text": "same"},
        {"text": "other"},
        {"text": "same", "password": "guess"},
    )
    async with gateway(tmp_path, store_url, audit_arguments="digest") as url:
        rows = await _decisions(url, first, same_reordered, other, other_password)
    assert [r["arguments"] for r in rows] == [None, None, None, None]
    assert rows[0]["args_digest"] == rows[1]["args_digest"] == _sha256({"text": "same", "password": "[REDACTED]"})
    assert rows[2]["args_digest"] == _sha256(other) != rows[0]["args_digest"]
    # Secrets are redacted before hashing: the digest does not tell one password from another.
    assert rows[3]["args_digest"] == rows[0]["args_digest"]


async def test_admin_actions_are_audited_with_their_actor_before_they_take_effect(
    tmp_path: Path, store_url: str
) -> None:
    config = write_config(tmp_path, {"x": stdio_upstream()}, database_url=store_url)
    made = await mcp_gateway("admin-token", "create", "--name", "ops", "--config", str(config))
    assert made.returncode == 0, made.stderr.decode()
    token = made.stdout.decode().strip()
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        async with admin_client(url, token) as admin:
            switch = (
                await admin.post("/kill-switches", json={"scope": "server", "server": "x", "reason": "incident 7"})
            ).json()
            key = (await admin.post("/keys", json={"team": "local", "name": "bot"})).json()
            rows = await settled_audit(admin, lambda rows: sum(r["kind"] == "admin" for r in rows) >= 2)
            keys = {k["id"]: k for k in (await admin.get("/keys")).json()["items"]}
    engage, create = sorted((r for r in rows if r["kind"] == "admin"), key=lambda r: r["seq"])
    assert (engage["principal_id"], engage["method"]) == ("ops", "killswitch.engage")
    assert "incident 7" in engage["detail"] and "'x'" in engage["detail"]
    assert (create["principal_id"], create["method"], create["detail"]) == ("ops", "key.create", "local/bot")
    assert engage["ts"] <= switch["created_at"], "recorded before the switch existed"
    assert create["ts"] <= keys[key["id"]]["created_at"], "recorded before the key existed"


async def test_an_admin_action_that_cannot_be_audited_is_not_taken(tmp_path: Path, store_url: str) -> None:
    kind = "sqlite" if store_url.startswith("sqlite") else "postgres"
    async with gateway(tmp_path, store_url) as url, admin_client(url) as admin:
        async with sql(store_url) as conn:
            for statement in REJECT[kind]:
                await conn.execute(sa.text(statement))
        engage = await admin.post("/kill-switches", json={"scope": "global", "reason": "unrecorded"})
        key = await admin.post("/keys", json={"team": "local", "name": "unrecorded"})
        team = await admin.post("/teams", json={"id": "unrecorded"})
        async with sql(store_url) as conn:
            for statement in ACCEPT[kind]:
                await conn.execute(sa.text(statement))
            stored = {
                table: (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()
                for table in ("kill_switches", "api_keys", "teams")
            }
        switches = (await admin.get("/kill-switches", params={"all": "true"})).json()["items"]
        async with agent(url) as client:
            result = await client.call_tool("x__echo", {"text": "no switch was engaged"})
    for response in (engage, key, team):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "audit_unavailable"
    assert switches == [] and stored == {"kill_switches": 0, "api_keys": 0, "teams": 1}, (
        "only `local`, from the policy files"
    )
    assert result.structured_content == {"text": "no switch was engaged"}
