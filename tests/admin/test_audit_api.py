"""The audit log through the admin API, on both stores: each filter selects exactly the rows
it names, rows come newest first, and the cursor walks a long log without losing or
repeating a row, even while new rows arrive."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from ..support import admin_client, agent, create_key, serve, stdio_upstream, wait_ready, write_config, write_policies
from .common import audit_rows, completions, settled_audit

pytestmark = pytest.mark.anyio

POLICY = {
    "teams": {
        "alpha": {"rules": [{"id": "alpha-echo", "allow": {"servers": ["x"], "tools": ["echo"]}}]},
        "beta": {"rules": [{"id": "beta-add", "allow": {"servers": ["x"], "tools": ["add"]}}]},
    }
}


@pytest.fixture
async def gateway(tmp_path: Path, store_url: str) -> AsyncIterator[str]:
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(tmp_path, {"x": stdio_upstream()}, auth="keys", policies="policies", database_url=store_url)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url


async def _echo(url: str, key: str, count: int, label: str = "call") -> None:
    async with agent(url, key) as client:
        for i in range(count):
            await client.call_tool("x__echo", {"text": f"{label} {i}"})


async def test_each_filter_selects_exactly_its_rows(gateway: str) -> None:
    alpha, beta = await create_key(gateway, "alpha", "bot"), await create_key(gateway, "beta", "bot")
    async with agent(gateway, alpha) as client:
        for i in range(3):
            await client.call_tool("x__echo", {"text": f"early {i}"})
        with pytest.raises(MCPError):
            await client.call_tool("x__add", {"a": 1, "b": 2})
    async with agent(gateway, beta) as client:
        await client.call_tool("x__add", {"a": 1, "b": 2})
        with pytest.raises(MCPError):
            await client.call_tool("x__echo", {"text": "not beta's"})
    async with admin_client(gateway) as admin:
        await settled_audit(admin, completions(4))
        middle = time.time()
        await _echo(gateway, alpha, 2, "late")
        everything = await settled_audit(admin, completions(6))

        filters: list[tuple[dict[str, str], Callable[[dict[str, Any]], bool]]] = [
            ({"team": "alpha"}, lambda r: r["team_id"] == "alpha"),
            ({"principal": "beta/bot"}, lambda r: r["principal_id"] == "beta/bot"),
            ({"server": "x"}, lambda r: r["server"] == "x"),
            ({"tool": "add"}, lambda r: r["tool"] == "add"),
            ({"decision": "deny"}, lambda r: r["decision"] == "deny"),
            ({"kind": "completion"}, lambda r: r["kind"] == "completion"),
            ({"kind": "admin"}, lambda r: r["kind"] == "admin"),
            ({"since": str(middle)}, lambda r: r["ts"] >= middle),
            ({"until": str(middle)}, lambda r: r["ts"] < middle),
            (
                {"team": "alpha", "decision": "deny", "tool": "add"},
                lambda r: (r["team_id"], r["decision"], r["tool"]) == ("alpha", "deny", "add"),
            ),
            ({"team": "nobody"}, lambda r: False),
        ]
        answers = [(params, match, await audit_rows(admin, **params)) for params, match in filters]
    for params, match, rows in answers:
        expected = [r["seq"] for r in everything if match(r)]
        assert [r["seq"] for r in rows] == expected, params
        if params != {"team": "nobody"}:
            assert 0 < len(expected) < len(everything), f"{params} must select some rows, not all"
    denied = {(r["principal_id"], r["tool"], r["rule_id"]) for r in everything if r["decision"] == "deny"}
    assert denied == {("alpha/bot", "add", "default-deny"), ("beta/bot", "echo", "default-deny")}


async def test_rows_come_newest_first(gateway: str) -> None:
    key = await create_key(gateway, "alpha", "bot")
    await _echo(gateway, key, 5)
    async with admin_client(gateway) as admin:
        rows = await settled_audit(admin, completions(5))
        page = (await admin.get("/audit", params={"limit": "3"})).json()
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    assert [r["ts"] for r in rows] == sorted((r["ts"] for r in rows), reverse=True)
    last_call = next(r for r in rows if r["kind"] == "decision")
    assert '"call 4"' in last_call["arguments"], "the newest decision is the last call's"
    assert page["items"] == rows[:3]
    assert page["next_cursor"] == str(rows[2]["seq"])


async def test_the_cursor_returns_every_row_exactly_once(gateway: str) -> None:
    key = await create_key(gateway, "alpha", "bot")
    await _echo(gateway, key, 130)
    async with admin_client(gateway) as admin:
        everything = await settled_audit(admin, completions(130))
        assert len(everything) > 250
        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
            response = await admin.get("/audit", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            pages.append(body["items"])
            if len(pages) == 1:
                await _echo(gateway, key, 3, "during paging")  # newer rows must not shift the pages
            cursor = body["next_cursor"]
            if cursor is None:
                break
            assert len(pages) < 10, "the cursor must reach the end"
    walked = [r["seq"] for page in pages for r in page]
    assert [len(page) for page in pages[:-1]] == [100] * (len(pages) - 1) and len(pages[-1]) < 100
    assert walked == [r["seq"] for r in everything], "every row once, newest first, none added during paging"


INVALID_PARAMETERS = [
    {"limit": "0"},
    {"limit": "-1"},
    {"limit": "1001"},
    {"limit": "many"},
    {"since": "yesterday"},
    {"until": "later"},
    {"cursor": "not-a-cursor"},
]


async def test_invalid_query_parameters_are_400(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        answers = [(params, await admin.get("/audit", params=params)) for params in INVALID_PARAMETERS]
    wrong = [
        f"{params}: {response.status_code} {response.text[:120]}"
        for params, response in answers
        if response.status_code != 400 or next(iter(params)) not in response.json()["error"]["message"]
    ]
    assert not wrong, "\n".join(wrong)


async def test_the_development_principal_is_spelled_local_slash_local_in_the_audit_as_in_the_docs(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, {"x": stdio_upstream()})  # auth: none
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        async with agent(url) as client:
            await client.call_tool("x__echo", {"text": "who am I"})
        async with admin_client(url) as admin:
            await settled_audit(admin, completions(1))
            rows = await audit_rows(admin, principal="local/local")
            assert {r["principal_id"] for r in rows} == {"local/local"}
            assert any(r["kind"] == "decision" and r["tool"] == "echo" for r in rows)
