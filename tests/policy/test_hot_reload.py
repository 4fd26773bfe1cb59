"""`serve` with a watched policy directory (SQLite and PostgreSQL): a change saved to a
policy file reaches the running gateway and flips the decision for the calls it affects,
without a restart; the audit rows on either side carry different policy versions.

The time each change took to land is printed (run with `-s`), never asserted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ..support import agent, serve, wait_ready, write_policies
from .live import ALLOW, DENY_ECHO, audit_rows, eventually, get, outcome, policy_gateway

pytestmark = pytest.mark.anyio


async def _until(client: Any, want: str, text: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        result = await outcome(client, "x__echo", {"text": text})
        return result if want in result else None

    return await eventually(check, f"x__echo {want}")


async def test_a_saved_change_flips_the_decision_without_a_restart(tmp_path: Path, store_url: str) -> None:
    policies = write_policies(tmp_path / "policies", ALLOW)
    config = policy_gateway(tmp_path, store_url, watch=True)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        started_at = gw.started_at
        async with agent(url) as client:
            first = await outcome(client, "x__echo", {"text": "before"})
            assert first["allowed"].structured_content == {"text": "before"}
            v1 = (await get(url, "/policy"))["policy_version"]

            saved = time.monotonic()
            write_policies(policies, DENY_ECHO)
            denied = (await _until(client, "denied", "during"))["denied"]
            to_deny = time.monotonic() - saved
            assert denied["rule_id"] == "no-echo" and denied["reason"] == "denied by rule no-echo"
            v2 = denied["policy_version"]
            assert v2 > v1
            # Only the affected call flipped, and the listing follows the decision.
            assert "allowed" in await outcome(client, "x__add", {"a": 1, "b": 2})
            listed = {t.name for t in (await client.list_tools()).tools}
            assert "x__add" in listed and "x__echo" not in listed

            saved = time.monotonic()
            write_policies(policies, ALLOW)
            await _until(client, "allowed", "after")
            to_allow = time.monotonic() - saved
        print(f"\nhot reload [{store_url.split(':')[0]}]: allow->deny {to_deny:.3f} s, deny->allow {to_allow:.3f} s")

        policy = await get(url, "/policy")
        rows = await audit_rows(url, kind="decision", tool="echo")
        assert gw.started_at == started_at  # the same gateway throughout
    v3 = policy["policy_version"]
    assert v3 > v2
    assert policy["reload"]["error"] is None and policy["reload"]["policy_version"] == v3
    assert [(h["version"], h["actor"]) for h in policy["history"][:3]] == [
        (v3, "mcp-gateway (watch)"),
        (v2, "mcp-gateway (watch)"),
        (v1, "mcp-gateway (start)"),
    ]

    versions = [(row["decision"], row["policy_version"]) for row in rows]
    assert versions[0] == ("allow", v1) and versions[-1] == ("allow", v3)
    assert ("deny", v2) in versions
    assert set(versions) <= {("allow", v1), ("deny", v2), ("allow", v3)}, versions
    # Never back: once a version decided, no older one does.
    assert [v for _, v in versions] == sorted(v for _, v in versions)


async def test_a_new_file_and_a_removed_file_are_picked_up(tmp_path: Path, store_url: str) -> None:
    policies = write_policies(tmp_path / "policies", ALLOW)
    config = policy_gateway(tmp_path, store_url, watch=True)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        async with agent(url) as client:
            deny_echo = {
                "teams": {"local": {"rules": [{"id": "no-echo", "deny": {"servers": ["x"], "tools": ["echo"]}}]}}
            }
            write_policies(policies, deny_echo, name="extra.yml")
            assert (await _until(client, "denied", "new file"))["denied"]["rule_id"] == "no-echo"
            (policies / "extra.yml").unlink()
            await _until(client, "allowed", "file removed")
