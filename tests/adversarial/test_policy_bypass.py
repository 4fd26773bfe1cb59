"""Issue 11, breaks 4 and 5, through a real gateway in front of real upstreams: a rule that
names tools over-granted prompts and resources (and a deny rule on tools denied them), a
resource deny rule was bypassed by `%31` for `1`, and a path constraint written as a
regular expression let `/srv/public/../secret.txt` reach the real filesystem server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.errors import GATEWAY_DENIED
from mcp_gateway.protocol import INVALID_PARAMS

from ..support import admin_client, agent, create_key, serve, stdio_upstream, wait_ready, write_config, write_policies

pytestmark = pytest.mark.anyio


def team(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"teams": {"alpha": {"rules": list(rules)}}}


async def gateway_with(tmp_path: Path, policy: dict[str, Any], upstreams: dict[str, Any]) -> AsyncIterator[str]:
    write_policies(tmp_path / "policies", policy)
    config = write_config(tmp_path, upstreams, auth="keys", policies="policies")
    async with serve(config) as (url, gw):
        await wait_ready(gw, timeout=120)
        yield url


async def decisions(url: str, principal: str) -> list[dict[str, Any]]:
    async with admin_client(url) as admin:
        response = await admin.get("/audit", params={"kind": "decision", "principal_id": principal})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


# -- break 4: a rule means what it names ----------------------------------------------------


@pytest.fixture
async def tools_only(tmp_path: Path) -> AsyncIterator[str]:
    async for url in gateway_with(
        tmp_path, team({"id": "alpha-echo", "allow": {"servers": ["x"], "tools": ["echo"]}}), {"x": stdio_upstream()}
    ):
        yield url


async def test_a_rule_that_names_only_tools_grants_no_resources_or_prompts(tools_only: str) -> None:
    key = await create_key(tools_only, "alpha", "bot")
    async with agent(tools_only, key) as client:
        assert (await client.call_tool("x__echo", {"text": "granted"})).structured_content == {"text": "granted"}
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        assert (await client.list_prompts()).prompts == []
        with pytest.raises(MCPError) as resource:
            await client.read_resource("x+test://static-text")
        with pytest.raises(MCPError) as template:
            await client.read_resource("x+test://template/7/data")
        with pytest.raises(MCPError) as prompt:
            await client.get_prompt("x__test_simple_prompt")
    for denied in (resource, template, prompt):
        assert denied.value.error.code == GATEWAY_DENIED
        assert denied.value.error.data["rule_id"] == "default-deny"


@pytest.fixture
async def deny_tools(tmp_path: Path) -> AsyncIterator[str]:
    policy = team(
        {"id": "alpha-x", "allow": {"servers": ["x"]}},
        {"id": "no-test-tools", "deny": {"servers": ["*"], "tools": ["test_*"]}},
    )
    async for url in gateway_with(tmp_path, policy, {"x": stdio_upstream()}):
        yield url


async def test_a_deny_rule_that_names_only_tools_denies_no_prompts_or_resources(deny_tools: str) -> None:
    # The README's `no-deletes` shape: it used to deny every prompt and resource on every server.
    key = await create_key(deny_tools, "alpha", "bot")
    async with agent(deny_tools, key) as client:
        with pytest.raises(MCPError) as tool:
            await client.call_tool("x__test_simple_text", {})
        prompt = await client.get_prompt("x__test_simple_prompt")
        resource = await client.read_resource("x+test://static-text")
        listed = {p.name for p in (await client.list_prompts()).prompts}
    assert tool.value.error.code == GATEWAY_DENIED and tool.value.error.data["rule_id"] == "no-test-tools"
    assert prompt.messages and resource.contents
    assert "x__test_simple_prompt" in listed


# -- break 5: resource URIs in one normal form ------------------------------------------------


@pytest.fixture
async def deny_template_one(tmp_path: Path) -> AsyncIterator[str]:
    policy = team(
        {"id": "alpha-x", "allow": {"servers": ["x"]}},
        {"id": "not-one", "deny": {"servers": ["x"], "resources": ["test://template/1/data"]}},
    )
    async for url in gateway_with(tmp_path, policy, {"x": stdio_upstream()}):
        yield url


@pytest.mark.parametrize(
    "uri",
    [
        "x+test://template/%31/data",  # the repro
        "x+test://template/2/../1/data",
        "X+TEST://TEMPLATE/./%31/data",
    ],
)
async def test_an_encoded_spelling_does_not_bypass_a_resource_deny_rule(deny_template_one: str, uri: str) -> None:
    key = await create_key(deny_template_one, "alpha", "bot")
    async with agent(deny_template_one, key) as client:
        with pytest.raises(MCPError) as denied:
            await client.read_resource(uri)
        assert (await client.read_resource("x+test://template/2/data")).contents
    assert denied.value.error.code == GATEWAY_DENIED
    assert denied.value.error.data["rule_id"] == "not-one"
    rows = [r for r in await decisions(deny_template_one, "alpha/bot") if r["method"] == "resources/read"]
    refused = [r for r in rows if r["decision"] == "deny"]
    assert [(r["tool"], r["rule_id"]) for r in refused] == [("test://template/1/data", "not-one")]


async def test_the_upstream_receives_the_normal_form_it_was_judged_by(deny_template_one: str) -> None:
    key = await create_key(deny_template_one, "alpha", "bot")
    async with agent(deny_template_one, key) as client:
        result = await client.read_resource("x+test://template/%61bc/./data")
    # The everything server echoes the URI it was asked for: it was sent the normal form.
    assert str(result.contents[0].uri) == "x+test://template/abc/data"
    assert '"id": "abc"' in result.contents[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("x+test://template/1%2Fdata", "an encoded '/' (%2F) in the path"),
        ("x+test://template/%2e%2e/template/1/data", "an encoded dot segment '%2e%2e' in the path"),
        ("x+test://template/1%zz/data", "malformed percent-encoding '%zz'"),
        ("x+test://template/1\\data", "a backslash"),
    ],
)
async def test_an_ambiguous_resource_uri_is_refused_with_invalid_params(
    deny_template_one: str, uri: str, problem: str
) -> None:
    key = await create_key(deny_template_one, "alpha", "bot")
    async with agent(deny_template_one, key) as client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource(uri)
    assert refused.value.error.code == INVALID_PARAMS
    assert refused.value.error.message == f"ambiguous resource URI {uri!r}: {problem}"


async def test_a_resource_uri_with_a_fragment_is_refused_as_invalid_params_and_on_record(
    deny_template_one: str,
) -> None:
    """A fragment is the client's (RFC 3986 §3.5): `x#a` is no other resource than `x`, so
    a rule on `x` must not be dodged (nor a grant doubled) by adding one. It is refused
    before anything is sent upstream, and the refusal is audited like any probe."""
    key = await create_key(deny_template_one, "alpha", "bot")
    uri = "x+test://template/1/data#part"
    async with agent(deny_template_one, key) as client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource(uri)
        with pytest.raises(MCPError) as unlisted:
            await client.read_resource("x+test://template/2/data#part")  # allowed without its fragment
    for error in (refused.value.error, unlisted.value.error):
        assert error.code == INVALID_PARAMS
        assert "a fragment ('#...')" in error.message
    rows = [r for r in await decisions(deny_template_one, "alpha/bot") if r["method"] == "resources/read"]
    assert [(r["decision"], r["tool"]) for r in rows] == [
        ("deny", "x+test://template/2/data#part"),
        ("deny", uri),
    ]


# -- break 5: a path constraint in front of the real filesystem server ----------------------


@pytest.fixture
async def filesystem(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    if shutil.which("npx") is None:
        pytest.skip("needs npx (Node.js) for @modelcontextprotocol/server-filesystem")
    root = (tmp_path / "srv").resolve()
    (root / "public").mkdir(parents=True)
    (root / "public" / "readme.md").write_text("public words")
    (root / "secret.txt").write_text("the secret")
    policy = team(
        {
            "id": "files-public-only",
            "allow": {
                "servers": ["files"],
                "tools": ["read_text_file", "read_file"],
                "arguments": {"path": {"under": str(root / "public")}},
            },
        }
    )
    upstream = {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", str(root)]}
    async for url in gateway_with(tmp_path, policy, {"files": {**upstream, "connect_timeout": 120}}):
        yield url, root


async def test_under_keeps_a_dot_dot_path_from_the_real_filesystem_server(filesystem: tuple[str, Path]) -> None:
    url, root = filesystem
    key = await create_key(url, "alpha", "bot")
    escapes = [
        f"{root}/public/../secret.txt",  # the repro
        f"{root}/public/./../secret.txt",
        f"{root}//public/../secret.txt",
        f"{root}/public/..%2Fsecret.txt",
    ]
    async with agent(url, key) as client:
        public = await client.call_tool("files__read_text_file", {"path": f"{root}/public/readme.md"})
        outcomes = []
        for path in escapes:
            with pytest.raises(MCPError) as denied:
                await client.call_tool("files__read_text_file", {"path": path})
            outcomes.append(denied.value.error)
    assert "public words" in public.content[0].text  # type: ignore[union-attr]
    for error in outcomes:
        assert error.code == GATEWAY_DENIED
        assert error.data["rule_id"] == "files-public-only"
        assert error.data["reason"].startswith(
            f"arguments not allowed by rule files-public-only: argument 'path' must be a path under {root}/public"
        )
        assert "the secret" not in str(error.data)
    rows = [r for r in await decisions(url, "alpha/bot") if r["tool"] == "read_text_file"]
    assert sorted(r["decision"] for r in rows) == ["allow"] + ["deny"] * len(escapes)
