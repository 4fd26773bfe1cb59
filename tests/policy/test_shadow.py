"""Shadow rules through a running gateway (SQLite and PostgreSQL): the live rules decide,
the candidate policy (live plus shadow rules) is evaluated beside them, and where the two
disagree the audit row says what the candidate would have done and which rule said so."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..support import agent, serve, wait_ready, write_policies
from .live import audit_rows, eventually, outcome, policy_gateway

pytestmark = pytest.mark.anyio

LIVE = {
    "teams": {
        "local": {
            "rules": [
                {"id": "local-x", "allow": {"servers": ["x"]}},
                {"id": "no-add-soon", "deny": {"servers": ["x"], "tools": ["add"]}, "shadow": True},
            ]
        }
    }
}
CANDIDATE = {
    "shadow": True,
    "teams": {
        "local": {
            "rules": [
                {"id": "no-echo-soon", "deny": {"servers": ["x"], "tools": ["echo"]}},
                {"id": "y-soon", "allow": {"servers": ["y"]}},
            ]
        }
    },
}


@pytest.fixture
async def gateway(tmp_path: Path, store_url: str):  # type: ignore[no-untyped-def]
    write_policies(tmp_path / "policies", LIVE, name="live.yaml")
    write_policies(tmp_path / "policies", CANDIDATE, name="candidate.yaml")
    config = policy_gateway(tmp_path, store_url, upstreams=("x", "y"))
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url


async def test_shadow_rules_decide_nothing_and_are_audited_where_they_disagree(gateway: str) -> None:
    url = gateway
    async with agent(url) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        added = await outcome(client, "x__add", {"a": 1, "b": 2})
        echoed = await outcome(client, "x__echo", {"text": "still served"})
        agreed = await outcome(client, "x__test_simple_text", {})
        refused = await outcome(client, "y__echo", {"text": "not yet"})

    # What is listed is what the live rules allow.
    assert {"x__add", "x__echo"} <= listed and not any(name.startswith("y__") for name in listed)
    # A rule-level shadow deny and a file-level one: the calls went through.
    assert added["allowed"].structured_content == {"result": 3}
    assert echoed["allowed"].structured_content == {"text": "still served"}
    assert "allowed" in agreed
    # A shadow allow: the call stays denied.
    assert refused["denied"]["rule_id"] == "default-deny"

    decisions = {(r["server"], r["tool"]): r for r in await audit_rows(url, kind="decision")}
    verdicts = {
        key: (row["decision"], row["rule_id"], row["shadow"], row["shadow_rule_id"]) for key, row in decisions.items()
    }
    assert verdicts[("x", "add")] == ("allow", "local-x", "would_deny", "no-add-soon")
    assert verdicts[("x", "echo")] == ("allow", "local-x", "would_deny", "no-echo-soon")
    assert verdicts[("x", "test_simple_text")] == ("allow", "local-x", None, None)
    assert verdicts[("y", "echo")] == ("deny", "default-deny", "would_allow", "y-soon")

    # The shadow-denied calls completed upstream.
    async def completed() -> dict[str, str] | None:
        rows = await audit_rows(url, kind="completion", server="x")
        outcomes = {r["tool"]: r["outcome"] for r in rows}
        return outcomes if {"add", "echo"} <= outcomes.keys() else None

    outcomes = await eventually(completed, "completion rows for x__add and x__echo")
    assert outcomes["add"] == outcomes["echo"] == "ok"
