"""Rules through the admin API, on both stores, for a gateway whose policy is not kept in
files: a rule takes effect for its team at once and stops when deleted, rules list in
evaluation order, and with a policy directory configured the API refuses to edit them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.errors import GATEWAY_DENIED

from ..support import admin_client, agent, create_key, serve, stdio_upstream, wait_ready, write_config

pytestmark = pytest.mark.anyio


def rule(rule_id: str, team: str, effect: str = "allow", **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "team": team, "effect": effect, "servers": ["x"], **extra}


@pytest.fixture
async def gateway(tmp_path: Path, store_url: str) -> AsyncIterator[str]:
    config = write_config(tmp_path, {"x": stdio_upstream()}, auth="keys", policies=None, database_url=store_url)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url


async def test_an_allow_rule_takes_effect_at_once_and_deleting_it_denies_again(gateway: str) -> None:
    alpha, beta = await create_key(gateway, "alpha", "bot"), await create_key(gateway, "beta", "bot")
    async with agent(gateway, alpha) as client, admin_client(gateway) as admin:
        assert (await client.list_tools()).tools == [], "deny by default"
        created = await admin.post("/rules", json=rule("alpha-echo", "alpha", tools=["echo"]))
        assert created.status_code == 201, created.text
        assert {t.name for t in (await client.list_tools()).tools} == {"x__echo"}
        result = await client.call_tool("x__echo", {"text": "allowed now"})
        assert result.structured_content == {"text": "allowed now"}
        with pytest.raises(MCPError) as other_tool:
            await client.call_tool("x__add", {"a": 1, "b": 2})

        deleted = await admin.delete("/rules/alpha-echo")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        with pytest.raises(MCPError) as after_delete:
            await client.call_tool("x__echo", {"text": "denied again"})
        assert (await client.list_tools()).tools == []
    async with agent(gateway, beta) as client:
        with pytest.raises(MCPError) as other_team:
            await client.call_tool("x__echo", {"text": "not beta's rule"})

    assert created.json()["policy_version"] < deleted.json()["policy_version"]
    assert other_tool.value.error.code == GATEWAY_DENIED
    assert after_delete.value.error.code == GATEWAY_DENIED
    assert after_delete.value.error.data["rule_id"] == "default-deny"
    assert after_delete.value.error.data["policy_version"] == deleted.json()["policy_version"]
    assert other_team.value.error.code == GATEWAY_DENIED


async def test_a_deny_rule_created_later_wins_over_an_earlier_allow(gateway: str) -> None:
    key = await create_key(gateway, "alpha", "bot")
    async with admin_client(gateway) as admin, agent(gateway, key) as client:
        assert (await admin.post("/rules", json=rule("alpha-all", "alpha"))).status_code == 201
        await client.call_tool("x__add", {"a": 1, "b": 2})
        assert (
            await admin.post("/rules", json=rule("alpha-no-add", "alpha", "deny", tools=["add"]))
        ).status_code == 201
        with pytest.raises(MCPError) as denied:
            await client.call_tool("x__add", {"a": 1, "b": 2})
    assert denied.value.error.data["rule_id"] == "alpha-no-add"


async def test_rules_are_listed_in_evaluation_order(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        for body in (
            rule("beta-first", "beta"),
            rule("alpha-first", "alpha", tools=["echo"]),
            rule("alpha-second", "alpha", "deny", tools=["add"]),
            rule("alpha-third", "alpha", tools=["add"], shadow=True, description="candidate"),
        ):
            assert (await admin.post("/rules", json=body)).status_code == 201
        alpha = (await admin.get("/rules", params={"team": "alpha"})).json()
        everything = (await admin.get("/rules")).json()
        await admin.delete("/rules/alpha-second")
        after = (await admin.get("/rules", params={"team": "alpha"})).json()["items"]
    assert [(r["id"], r["position"]) for r in alpha["items"]] == [
        ("alpha-first", 1),
        ("alpha-second", 2),
        ("alpha-third", 3),
    ]
    third = alpha["items"][2]
    assert (third["effect"], third["tools"], third["shadow"], third["description"]) == (
        "allow",
        ["add"],
        True,
        "candidate",
    )
    assert [r["id"] for r in everything["items"]] == ["alpha-first", "alpha-second", "alpha-third", "beta-first"]
    assert alpha["policy_version"] == everything["policy_version"] >= 4
    assert [r["id"] for r in after] == ["alpha-first", "alpha-third"]


async def test_a_duplicate_rule_id_conflicts_and_an_unknown_one_is_not_found(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        assert (await admin.post("/rules", json=rule("shared-id", "alpha"))).status_code == 201
        same_team = await admin.post("/rules", json=rule("shared-id", "alpha", tools=["echo"]))
        other_team = await admin.post("/rules", json=rule("shared-id", "beta"))
        missing = await admin.delete("/rules/no-such-rule")
        listed = (await admin.get("/rules")).json()["items"]
    for response in (same_team, other_team):
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "exists" and "shared-id" in response.json()["error"]["message"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    # A rule that names no kind lists its kinds as null (not named), not ["*"].
    assert [(r["id"], r["team"], r["tools"]) for r in listed] == [("shared-id", "alpha", None)]


async def test_a_rule_that_names_tools_grants_no_prompts_or_resources(gateway: str) -> None:
    # Issue 11: a rule through the API that named tools used to grant every prompt and resource too.
    key = await create_key(gateway, "alpha", "bot")
    async with admin_client(gateway) as admin, agent(gateway, key) as client:
        created = await admin.post("/rules", json=rule("alpha-echo", "alpha", tools=["echo"]))
        assert created.status_code == 201, created.text
        assert (created.json()["tools"], created.json()["prompts"], created.json()["resources"]) == (
            ["echo"],
            None,
            None,
        )
        assert (await client.list_prompts()).prompts == []
        assert (await client.list_resources()).resources == []
        with pytest.raises(MCPError) as prompt:
            await client.get_prompt("x__test_simple_prompt")
        with pytest.raises(MCPError) as resource:
            await client.read_resource("x+test://static-text")
        assert (await client.call_tool("x__echo", {"text": "tools still"})).structured_content == {
            "text": "tools still"
        }

        widened = await admin.post("/rules", json=rule("alpha-docs", "alpha", prompts=["*"], resources=["test://*"]))
        assert widened.status_code == 201, widened.text
        assert [p.name for p in (await client.list_prompts()).prompts]
        assert (await client.read_resource("x+test://static-text")).contents
    for denied in (prompt, resource):
        assert denied.value.error.code == GATEWAY_DENIED
        assert denied.value.error.data["rule_id"] == "default-deny"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tools": []}, "tools: List should have at least 1 item after validation, not 0"),
        (
            {"resources": ["TEST://x"]},
            "resources: Value error, 'TEST://x' is not in normal form (RFC 3986): write 'test://x'",
        ),
        (
            {"arguments": {"path": {"under": "/srv/../etc"}}},
            "arguments.path.under: Value error, must be an absolute path in normal form; it has a '..' segment",
        ),
        ({"arguments": {"path": {"pattern": "("}}}, "arguments.path.pattern: Value error, invalid regular expression"),
        (
            {"arguments": {"path": {"under": "/srv", "prefix": "/x"}}},
            "arguments.path.prefix: Extra inputs are not permitted",
        ),
    ],
)
async def test_a_rule_body_the_policy_files_would_refuse_is_refused(
    gateway: str, extra: dict[str, Any], message: str
) -> None:
    async with admin_client(gateway) as admin:
        refused = await admin.post("/rules", json=rule("alpha-bad", "alpha", **extra))
        listed = (await admin.get("/rules")).json()["items"]
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_request"
    assert refused.json()["error"]["message"].startswith(message)
    assert listed == []


async def test_a_deny_rule_with_argument_constraints_is_refused(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        body = rule("alpha-bad", "alpha", "deny", arguments={"path": {"under": "/srv"}})
        refused = await admin.post("/rules", json=body)
    assert refused.status_code == 400
    assert "`arguments` constraints belong on allow rules" in refused.json()["error"]["message"]


async def test_with_a_policy_directory_the_api_does_not_edit_rules(tmp_path: Path, store_url: str) -> None:
    # write_config's default: a policy directory that lets team `local` use every upstream.
    config = write_config(tmp_path, {"x": stdio_upstream()}, database_url=store_url)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        async with admin_client(url) as admin:
            created = await admin.post("/rules", json=rule("api-rule", "local", "deny"))
            invalid = await admin.post("/rules", json={"id": "broken"})
            deleted = await admin.delete("/rules/local-all")
            listed = (await admin.get("/rules")).json()["items"]
        async with agent(url) as client:
            await client.call_tool("x__echo", {"text": "the file's rule still holds"})
    for response in (created, invalid, deleted):
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "managed_by_files"
        assert "managed by the policy files" in response.json()["error"]["message"]
    assert [r["id"] for r in listed] == ["local-all"]
