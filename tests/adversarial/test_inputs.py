"""Issue 11, break 11: every authenticated request is decided and audited before anything
else is done with it, and bad input gets a clear 400 or invalid-params error, never a 500
or -32603.

A real gateway on loopback (API keys, an admin token, the example server over stdio);
raw JSON-RPC for what an SDK client would never send; the audit log read back through
the admin API.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from mcp_gateway import jsonrpc
from mcp_gateway.errors import ProtocolError

from ..admin.common import audit_rows
from .common import (
    CLIENT_CAPABILITIES,
    DEEP,
    MODERN,
    PROTOCOL_VERSION,
    Deployment,
    Rpc,
    deployment,
    error_of,
    rpc,
    with_nesting,
)

pytestmark = pytest.mark.anyio

MODES = ["legacy", MODERN]


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    """One gateway for the module: each test uses principals of its own."""
    async with deployment(tmp_path_factory.mktemp("inputs")) as running:
        yield running


async def decisions(gateway: Deployment, **filters: str) -> list[dict[str, Any]]:
    async with gateway.admin() as admin:
        return await audit_rows(admin, kind="decision", **filters)


async def echo_still_works(client: Rpc) -> None:
    response = await client.request("tools/call", {"name": "x__echo", "arguments": {"text": "still here"}})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["structuredContent"] == {"text": "still here"}


# -- unknown names are decided and audited ---------------------------------------------------

UNKNOWN = [
    ("tools/call", {"name": "nosuch__tool", "arguments": {}}, "nosuch__tool", -32602),
    ("tools/call", {"name": "x__nosuch"}, "x__nosuch", -32602),
    ("prompts/get", {"name": "nosuch__prompt"}, "nosuch__prompt", -32602),
    ("resources/read", {"uri": "nosuch://secret/1"}, "nosuch://secret/1", -32002),
    (
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "nosuch__prompt"}, "argument": {"name": "a", "value": ""}},
        "nosuch__prompt",
        -32602,
    ),
    (
        "completion/complete",
        {"ref": {"type": "ref/resource", "uri": "nosuch://t/{id}"}, "argument": {"name": "id", "value": ""}},
        "nosuch://t/{id}",
        -32002,
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("method", "params", "name", "code"), UNKNOWN, ids=[f"{m}-{n}" for m, _, n, _ in UNKNOWN])
async def test_a_request_naming_nothing_the_gateway_serves_is_refused_and_audited_as_a_denial(
    gateway: Deployment, mode: str, method: str, params: dict[str, Any], name: str, code: int
) -> None:
    who, key = await gateway.key()
    async with rpc(gateway, key, mode) as client:
        response = await client.request(method, params)
        assert error_of(response)["code"] == code, response.text
        await echo_still_works(client)
    rows = await decisions(gateway, principal=who, decision="deny")
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["method"], row["tool"], row["team_id"]) == (method, name, "alpha")
    assert "no such" in row["reason"]


async def test_a_probe_with_a_huge_unknown_name_is_audited_with_the_name_cut_short(gateway: Deployment) -> None:
    who, key = await gateway.key()
    name = "nosuch__" + "a" * 100_000
    async with rpc(gateway, key, "legacy") as client:
        response = await client.request("tools/call", {"name": name})
        assert error_of(response)["code"] == -32602
    [row] = await decisions(gateway, principal=who)
    assert row["decision"] == "deny" and row["tool"].startswith("nosuch__aaa") and len(row["tool"]) <= 256


# -- requests the protocol's inbound checks refuse (2026-07-28) --------------------------------

REJECTED = [
    # (method, params in the body, the Mcp-Name header sent, the name the row holds)
    ("tools/call", {"name": "x__echo", "arguments": {"text": "hi"}}, "x__other", "x__echo"),
    ("prompts/get", {"name": "x__simple-prompt"}, "x__other", "x__simple-prompt"),
    (
        "resources/read",
        {"uri": "x+test://static/resource/1"},
        "x+test://static/resource/2",
        "x+test://static/resource/1",
    ),
]


@pytest.mark.parametrize(("method", "params", "header", "name"), REJECTED, ids=[m for m, *_ in REJECTED])
async def test_a_request_the_inbound_checks_refuse_forwards_nothing_and_is_audited_as_a_denial(
    gateway: Deployment, method: str, params: dict[str, Any], header: str, name: str
) -> None:
    """Headers that disagree with the body: the SDK's inbound checks refuse the request
    before governance sees it. It reaches no upstream (no allowing decision, which every
    forward has first), and, naming a target, it is on record like any other refusal."""
    who, key = await gateway.key()
    async with rpc(gateway, key, MODERN) as client:
        headers = {**client.headers(method, params), "mcp-name": header}
        response = await client.http.post("/mcp", content=client.body(method, params), headers=headers)
        assert response.status_code == 400, response.text
        error = error_of(response)
    rows = await decisions(gateway, principal=who)
    assert [(r["decision"], r["tool"], r["rule_id"]) for r in rows] == [("deny", name, None)]
    assert rows[0]["reason"] == f"refused before a decision: {error['message']}"


async def test_a_refused_request_naming_no_target_leaves_no_row(gateway: Deployment) -> None:
    who, key = await gateway.key()
    async with rpc(gateway, key, MODERN) as client:
        headers = {**client.headers("tools/list", {}), "mcp-method": "prompts/list"}
        response = await client.http.post("/mcp", content=client.body("tools/list", {}), headers=headers)
        assert response.status_code == 400, response.text
    assert await decisions(gateway, principal=who) == []


async def test_over_stdio_a_request_the_inbound_checks_refuse_is_audited_as_a_denial(tmp_path: Path) -> None:
    """`mcp-gateway stdio` at 2026-07-28: a request without the envelope is refused by the
    inbound checks before any decision, forwards nothing, and is on record."""
    async with deployment(tmp_path) as gateway:
        who, key = await gateway.key()
        command = [sys.executable, "-m", "mcp_gateway", "stdio", "--config", str(tmp_path / "gateway.yaml")]
        env = {**os.environ, "MCP_GATEWAY_KEY": key}
        envelope = {PROTOCOL_VERSION: MODERN, CLIENT_CAPABILITIES: {}}
        call = {"name": "x__echo", "arguments": {"text": "hi"}}
        with (tmp_path / "stdio.log").open("wb") as stderr, anyio.fail_after(60):
            async with await anyio.open_process(command, env=env, stderr=stderr) as process:
                assert process.stdin is not None and process.stdout is not None
                lines = BufferedByteReceiveStream(process.stdout)
                answers = []
                for request_id, params in ((1, {**call, "_meta": envelope}), (2, call)):
                    message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
                    await process.stdin.send(json.dumps(message).encode() + b"\n")
                    answers.append(json.loads(await lines.receive_until(b"\n", 1 << 20)))
                await process.stdin.aclose()
                await process.wait()
        rows = await decisions(gateway, principal=who)
    assert answers[0]["result"]["structuredContent"] == {"text": "hi"}
    assert answers[1]["error"]["code"] == -32602
    # Newest first: the refusal, after the first call's allowing decision (its only forward).
    assert [(r["decision"], r["tool"]) for r in rows] == [("deny", "x__echo"), ("allow", "echo")]
    assert rows[0]["reason"] == f"refused before a decision: {answers[1]['error']['message']}"


# -- arguments are checked after the decision ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_invalid_arguments_are_audited_after_an_allowing_decision(gateway: Deployment, mode: str) -> None:
    who, key = await gateway.key()
    async with rpc(gateway, key, mode) as client:
        response = await client.request("tools/call", {"name": "x__add", "arguments": {"a": "one", "b": 2}})
    result = response.json()["result"]
    assert result["isError"] is True and "Invalid arguments" in result["content"][0]["text"]
    async with gateway.admin() as admin:
        rows = await audit_rows(admin, principal=who, tool="add")
    assert [(r["kind"], r["decision"]) for r in reversed(rows)][:1] == [("decision", "allow")]
    completions = [r for r in rows if r["kind"] == "completion"]
    if completions:  # queued, not awaited: it may still be on its way
        assert completions[0]["outcome"] == "tool_error" and "invalid arguments" in completions[0]["detail"]


async def test_a_denied_principal_with_invalid_arguments_gets_the_denial(gateway: Deployment) -> None:
    who, key = await gateway.key("beta")
    async with rpc(gateway, key, "legacy") as client:
        response = await client.request("tools/call", {"name": "x__add", "arguments": {"a": "one"}})
    assert error_of(response)["code"] == -32050
    [row] = await decisions(gateway, principal=who)
    assert (row["decision"], row["tool"]) == ("deny", "add")


# -- nesting depth is bounded where messages are parsed ------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("depth", [100, 300, 1000])
async def test_arguments_nested_too_deep_are_refused_naming_the_limit(
    gateway: Deployment, mode: str, depth: int
) -> None:
    _, key = await gateway.key()
    async with rpc(gateway, key, mode) as client:
        params = {"name": "x__echo", "arguments": {"text": "hi", "deep": DEEP}}
        body = with_nesting(client.body("tools/call", params), depth)
        response = await client.send_raw(body, "tools/call", params)
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["code"] == -32600
        assert f"{jsonrpc.MAX_DEPTH}" in error["message"] and "nest" in error["message"]
        await echo_still_works(client)


@pytest.mark.parametrize("depth", [100, 300])
async def test_meta_nested_too_deep_is_refused_naming_the_limit(gateway: Deployment, depth: int) -> None:
    who, key = await gateway.key()
    async with rpc(gateway, key, MODERN) as client:
        params = {"name": "x__echo", "arguments": {"text": "hi"}}
        body = with_nesting(client.body("tools/call", params, {"deep": DEEP}), depth)
        response = await client.send_raw(body, "tools/call", params)
        assert response.status_code == 400, response.text
        assert error_of(response)["code"] == -32600
        assert "nest" in error_of(response)["message"]
        await echo_still_works(client)
    assert await decisions(gateway, principal=who) != []


@pytest.mark.parametrize("mode", MODES)
async def test_arguments_nested_within_the_limit_are_decided_audited_and_forwarded(
    gateway: Deployment, mode: str
) -> None:
    who, key = await gateway.key()
    async with rpc(gateway, key, mode) as client:
        params = {"name": "x__echo", "arguments": {"text": "hi", "deep": DEEP}}
        body = with_nesting(client.body("tools/call", params), 56)  # within the documented limit of 64
        response = await client.send_raw(body, "tools/call", params)
        assert response.status_code == 200, response.text
        assert response.json()["result"]["structuredContent"] == {"text": "hi"}
    [row] = await decisions(gateway, principal=who)
    assert (row["decision"], row["tool"]) == ("allow", "echo")


# -- malformed notifications ------------------------------------------------------------------


@pytest.mark.parametrize("request_id", [[1], {"a": 1}, None, 1.5, True])
async def test_a_cancellation_naming_no_valid_request_id_is_ignored(gateway: Deployment, request_id: Any) -> None:
    _, key = await gateway.key()
    async with rpc(gateway, key, "legacy") as client:
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
        response = await client.send_raw(json.dumps(cancel).encode())
        assert response.status_code == 202, response.text
        await echo_still_works(client)


# -- the admin API's query parameters and bodies --------------------------------------------------

BAD_AUDIT_QUERIES = [
    ("limit", "nan"),
    ("limit", "inf"),
    ("limit", "-inf"),
    ("limit", "1e400"),
    ("limit", "-5"),
    ("limit", "0"),
    ("limit", "1.5"),
    ("limit", "ten"),
    ("limit", "9" * 5000),
    ("cursor", "9" * 5000),
    ("cursor", "-1"),
    ("cursor", "abc"),
    ("cursor", "9" * 30),
    ("since", "nan"),
    ("since", "inf"),
    ("since", "1e400"),
    ("since", "yesterday"),
    ("until", "nan"),
    ("until", "-inf"),
    ("until", "9" * 5000),
]


async def test_every_bad_audit_query_parameter_gets_400_naming_it(gateway: Deployment) -> None:
    async with gateway.admin() as admin:
        for name, value in BAD_AUDIT_QUERIES:
            response = await admin.get("/audit", params={name: value})
            assert response.status_code == 400, (name, value[:20], response.status_code, response.text[:300])
            assert name in response.json()["error"]["message"], (name, value[:20])
        assert (await admin.get("/audit", params={"limit": "5", "since": "0"})).status_code == 200


BAD_BODIES: list[tuple[str, str, bytes]] = [
    ("POST", "/kill-switches", b"not json"),
    ("POST", "/kill-switches", b"[]"),
    ("POST", "/kill-switches", b'{"scope": "global", "reason": "x", "expires_in_seconds": 1e400}'),
    ("POST", "/kill-switches", b'{"scope": "global", "reason": "x", "expires_in_seconds": 1e300}'),
    ("POST", "/kill-switches", b'{"scope": "global", "reason": 5}'),
    ("POST", "/kill-switches", b'{"scope": "team", "team": ["a"], "reason": "x"}'),
    ("POST", "/kill-switches/nosuch/release", b"\xff\xfe"),
    ("POST", "/teams", b'{"id": ' + b"9" * 5000 + b"}"),
    ("POST", "/keys", b'{"team": "a", "name": {"deep": [[[[[[[[[[]]]]]]]]]]}}'),
]


async def test_admin_bodies_that_are_not_what_the_route_takes_get_400(gateway: Deployment) -> None:
    async with gateway.admin() as admin:
        for method, path, body in BAD_BODIES:
            response = await admin.request(method, path, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, (method, path, body[:80], response.status_code, response.text[:300])
            assert response.json()["error"]["code"] == "invalid_request"
        assert (await admin.get("/status")).status_code == 200


BAD_RULES: list[bytes] = [
    b'{"id": "r", "team": "a", "effect": "allow", "servers": ["x"], "arguments": {"p": 5}}',
    b'{"id": "r", "team": "a", "effect": "allow", "servers": ["x"], "arguments": {"p": {"pattern": "("}}}',
    b'{"id": "r", "team": "a", "effect": "allow", "servers": ["x"], "arguments": {"p": {"nosuch": 1}}}',
    b'{"id": "r", "team": "a", "effect": "deny", "servers": ["x"], "arguments": {"p": {"enum": [1]}}}',
    b'{"id": "r", "team": "a", "effect": "allow", "servers": ["x"], "description": "nul \\u0000 here"}',
]


async def test_rules_the_engine_could_not_use_are_refused_with_400_and_not_stored(tmp_path: Path) -> None:
    async with deployment(tmp_path, policies=None) as running, running.admin() as admin:
        for body in BAD_RULES:
            response = await admin.post("/rules", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, (body, response.status_code, response.text[:300])
            assert response.json()["error"]["code"] == "invalid_request"
        listed = await admin.get("/rules")
        assert listed.status_code == 200 and listed.json()["items"] == []


async def test_audit_parameters_at_their_bounds_are_served_on_both_stores(tmp_path: Path, store_url: str) -> None:
    async with deployment(tmp_path, database_url=store_url) as running, running.admin() as admin:
        for params in (
            {"cursor": str(2**63 - 1)},
            {"cursor": "1"},
            {"limit": "1000", "since": "-99999999999.5", "until": "999999999999"},
            {"team": "t" * 512, "tool": "ü" * 300},
        ):
            response = await admin.get("/audit", params=params)
            assert response.status_code == 200, (params, response.text[:300])
        for params in ({"team": "a\x00b"}, {"tool": "x" * 513}):
            response = await admin.get("/audit", params=params)
            assert response.status_code == 400, (params, response.text[:300])
            assert next(iter(params)) in response.json()["error"]["message"]


# -- the depth bound itself, in process -------------------------------------------------------


def _message_with_depth(depth: int) -> bytes:
    """A request whose deepest value sits `depth` levels down (the envelope is level 1)."""
    inner = b"[" * (depth - 2) + b"1" + b"]" * (depth - 2)
    return b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": ' + inner + b"}}"


def test_a_message_exactly_at_the_depth_limit_parses_and_one_level_more_does_not() -> None:
    assert jsonrpc.parse_incoming(_message_with_depth(jsonrpc.MAX_DEPTH))["method"] == "ping"
    with pytest.raises(ProtocolError) as refused:
        jsonrpc.parse_incoming(_message_with_depth(jsonrpc.MAX_DEPTH + 1))
    assert refused.value.code == -32600 and str(jsonrpc.MAX_DEPTH) in refused.value.message


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[{" * 10_000
    message = jsonrpc.parse_incoming(json.dumps({"jsonrpc": "2.0", "method": "x", "params": {"t": text}}))
    assert message["params"]["t"] == text
