"""An invalid bundle never replaces the live one: a broken file saved over a good one
leaves decisions as they were, its errors (file:line) show in the status endpoint and
`GET /admin/api/policy`, and fixing the file clears them. `POST /admin/api/policy/reload`
answers 422 with the errors, 200 once fixed. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..support import admin_client, agent, serve, wait_ready, write_config, write_policies
from .live import audit_rows, eventually, get, outcome, policy_gateway

pytestmark = pytest.mark.anyio

GOOD = """\
teams:
  local:
    rules:
      - id: local-x
        allow: {servers: [x], tools: [echo, add]}
"""
CHANGED = GOOD.replace("tools: [echo, add]", "tools: [echo]")
BROKEN = {
    # (text, line, message)
    "yaml": (GOOD.replace("tools: [echo, add]}", "tools: [echo, add]"), 5, "invalid YAML: expected ',' or '}'"),
    "both effects": (
        GOOD + "        deny: {servers: [x]}\n",
        4,
        "teams.local.rules.0: Value error, a rule has exactly one of `allow` or `deny`",
    ),
}


async def _call_echo(url: str) -> dict[str, Any]:
    async with agent(url) as client:
        return await outcome(client, "x__echo", {"text": "hi"})


async def _reload_error(url: str) -> list[str] | None:
    errors: list[str] | None = (await get(url, "/status"))["policy_reload"]["error"]
    return errors


async def _cleared(url: str) -> bool | None:
    return True if await _reload_error(url) is None else None


async def _newer_version(url: str, than: int) -> int | None:
    version: int = (await get(url, "/policy"))["policy_version"]
    return version if version > than else None


@pytest.mark.parametrize("breakage", list(BROKEN))
async def test_a_broken_file_saved_over_a_good_one_changes_nothing_and_shows_its_error(
    tmp_path: Path, store_url: str, breakage: str
) -> None:
    policies = tmp_path / "policies"
    path = policies / "local.yaml"
    policies.mkdir()
    path.write_text(GOOD)
    text, line, message = BROKEN[breakage]
    config = policy_gateway(tmp_path, store_url, watch=True)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        v1 = (await get(url, "/policy"))["policy_version"]
        assert await _reload_error(url) is None

        path.write_text(text)
        errors = await eventually(lambda: _reload_error(url), "the reload error in /status")
        where = f"{path.resolve()}:{line}: "
        assert len(errors) == 1 and errors[0].startswith(where + message), errors
        policy = await get(url, "/policy")
        assert policy["reload"]["error"] == errors
        assert policy["policy_version"] == v1 and len(policy["history"]) == 1

        # Decisions are those of the live bundle, version v1.
        allowed = await _call_echo(url)
        assert allowed["allowed"].structured_content == {"text": "hi"}
        async with agent(url) as client:
            assert "allowed" in await outcome(client, "x__add", {"a": 1, "b": 2})
        status = await get(url, "/status")
        assert status["snapshot"]["policy_version"] == v1 and status["policy"]["version"] == v1

        path.write_text(GOOD)  # fixed, as it was
        await eventually(lambda: _cleared(url), "the reload error to clear")
        policy = await get(url, "/policy")
        assert policy["reload"]["error"] is None and policy["policy_version"] == v1  # same content: no new version

        path.write_text(CHANGED)
        v2 = await eventually(lambda: _newer_version(url, v1), "the changed bundle to apply")
        async with agent(url) as client:
            denied = await outcome(client, "x__add", {"a": 1, "b": 2})
        assert denied["denied"]["rule_id"] == "default-deny" and denied["denied"]["policy_version"] == v2
        rows = await audit_rows(url, kind="decision", tool="echo")
    assert [r["policy_version"] for r in rows] == [v1]


async def test_reload_on_demand_answers_422_with_the_errors_then_200_when_fixed(tmp_path: Path, store_url: str) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    path = policies / "local.yaml"
    path.write_text(GOOD)
    config = policy_gateway(tmp_path, store_url)  # no watcher: only the endpoint reloads
    async with serve(config) as (url, gw), admin_client(url) as admin:
        await wait_ready(gw)
        v1 = (await get(url, "/policy"))["policy_version"]

        path.write_text(BROKEN["yaml"][0])
        (policies / "other.yaml").write_text(
            "teams:\n  local:\n    rules:\n      - id: local-x\n        allow: {servers: [y]}\n"
        )
        refused = await admin.post("/policy/reload")
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["applied"] is False and body["policy_version"] is None
        assert body["error"] == [f"{path.resolve()}:5: invalid YAML: expected ',' or '}}', but got '<stream end>'"]
        assert (await _reload_error(url)) == body["error"]
        assert (await get(url, "/policy"))["reload"]["error"] == body["error"]
        assert "allowed" in await _call_echo(url)

        path.write_text(CHANGED)  # fixed, but other.yaml reuses the rule id
        duplicate = await admin.post("/policy/reload")
        assert duplicate.status_code == 422
        assert duplicate.json()["error"] == [
            f"{(policies / 'other.yaml').resolve()}:4: rule id 'local-x' is already used in local.yaml:4"
        ]
        (policies / "other.yaml").unlink()

        fixed = await admin.post("/policy/reload")
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["applied"] is True and fixed.json()["error"] is None
        v2 = fixed.json()["policy_version"]
        assert v2 > v1
        assert await _reload_error(url) is None
        again = await admin.post("/policy/reload")
        assert again.status_code == 200
        assert again.json() == {"applied": False, "policy_version": v2, "error": None}
        async with agent(url) as client:
            assert (await outcome(client, "x__add", {"a": 1, "b": 2}))["denied"]["policy_version"] == v2


async def test_reload_on_demand_is_audited_as_an_admin_action(tmp_path: Path, store_url: str) -> None:
    write_policies(tmp_path / "policies", {"teams": {"local": {"rules": [{"id": "all", "allow": {"servers": ["x"]}}]}}})
    config = policy_gateway(tmp_path, store_url)
    async with serve(config) as (url, gw), admin_client(url) as admin:
        await wait_ready(gw)
        assert (await admin.post("/keys", json={"team": "local", "name": "bot"})).status_code == 201
        assert (await admin.post("/policy/reload")).status_code == 200
        rows = await audit_rows(url, kind="admin")
    actions = [row["method"] for row in rows]
    assert "key.create" in actions  # the admin rows are where they should be
    assert any("reload" in (action or "") for action in actions), actions


async def test_reload_without_a_policy_directory_is_409_and_rules_are_not_editable_with_one(
    tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "bare").mkdir()
    bare = write_config(tmp_path / "bare", {}, policies=None, database_url=store_url)
    async with serve(bare) as (url, _), admin_client(url) as admin:
        response = await admin.post("/policy/reload")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_policy_directory"

    write_policies(tmp_path / "policies", {"teams": {"local": {"rules": [{"id": "all", "allow": {"servers": ["x"]}}]}}})
    config = policy_gateway(tmp_path, store_url)
    async with serve(config) as (url, _), admin_client(url) as admin:
        created = await admin.post(
            "/rules", json={"id": "sneaky", "team": "local", "effect": "allow", "servers": ["*"]}
        )
        deleted = await admin.delete("/rules/all")
    assert (created.status_code, deleted.status_code) == (409, 409)
