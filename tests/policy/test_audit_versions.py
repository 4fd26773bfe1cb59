"""Every audit row carries the policy version that decided it (SQLite and PostgreSQL): a
call decided under one version and completed after the next was applied is recorded
under the first, on its decision row and on its completion row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.context import ClientRequestContext
from mcp.types import ElicitRequestParams, ElicitResult

from ..support import admin_client, agent, serve, wait_ready, write_policies
from .live import BOUND, audit_rows, eventually, get, outcome, policy_gateway

pytestmark = pytest.mark.anyio

V1 = {"teams": {"local": {"rules": [{"id": "local-x", "allow": {"servers": ["x"]}}]}}}
V2 = {"teams": {"local": {"rules": [{"id": "local-x-again", "allow": {"servers": ["x"]}}]}}}


class HeldUser:
    """Answers an elicitation only when the test lets it: the call stays in flight until then."""

    def __init__(self) -> None:
        self.asked = anyio.Event()
        self.answer = anyio.Event()

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.asked.set()
        await self.answer.wait()
        return ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})


async def test_decision_and_completion_rows_carry_the_version_that_decided_the_call(
    tmp_path: Path, store_url: str
) -> None:
    policies = write_policies(tmp_path / "policies", V1)
    config = policy_gateway(tmp_path, store_url)
    user = HeldUser()
    results: dict[str, Any] = {}
    async with serve(config) as (url, gw), admin_client(url) as admin:
        await wait_ready(gw)
        v1 = (await get(url, "/policy"))["policy_version"]
        async with agent(url, elicitation_callback=user) as held, anyio.create_task_group() as tg:

            async def call() -> None:
                results["held"] = await outcome(held, "x__test_elicitation", {"message": "who?"})

            tg.start_soon(call)
            with anyio.fail_after(BOUND):
                await user.asked.wait()  # decided under v1, now in flight

            write_policies(policies, V2)
            reloaded = await admin.post("/policy/reload")
            assert reloaded.status_code == 200, reloaded.text
            v2 = reloaded.json()["policy_version"]
            assert v2 > v1
            async with agent(url) as client:
                results["after"] = await outcome(client, "x__echo", {"text": "under v2"})
            user.answer.set()

        assert "allowed" in results["held"] and "allowed" in results["after"]

        async def completed() -> list[dict[str, Any]] | None:
            rows = await audit_rows(url, kind="completion")
            return rows if {r["tool"] for r in rows} >= {"test_elicitation", "echo"} else None

        completions = await eventually(completed, "both completion rows")
        decisions = await audit_rows(url, kind="decision")
        everything = await audit_rows(url)

    by_tool = {(r["kind"], r["tool"]): r for r in [*decisions, *completions]}
    held_decision, held_done = by_tool[("decision", "test_elicitation")], by_tool[("completion", "test_elicitation")]
    after_decision, after_done = by_tool[("decision", "echo")], by_tool[("completion", "echo")]
    assert held_decision["call_id"] == held_done["call_id"]
    assert (held_decision["policy_version"], held_decision["rule_id"]) == (v1, "local-x")
    assert (held_done["policy_version"], held_done["rule_id"], held_done["outcome"]) == (v1, "local-x", "ok")
    assert (after_decision["policy_version"], after_decision["rule_id"]) == (v2, "local-x-again")
    assert (after_done["policy_version"], after_done["outcome"]) == (v2, "ok")
    # The completion was written after v2 was live, and still names v1.
    assert held_done["seq"] > after_decision["seq"]
    assert all(row["policy_version"] is not None for row in everything), [
        (row["kind"], row["method"]) for row in everything if row["policy_version"] is None
    ]


async def test_a_denied_call_names_the_version_that_denied_it(tmp_path: Path, store_url: str) -> None:
    policies = write_policies(tmp_path / "policies", V1)
    config = policy_gateway(tmp_path, store_url)
    async with serve(config) as (url, gw), admin_client(url) as admin:
        await wait_ready(gw)
        write_policies(
            policies,
            {"teams": {"local": {"rules": [{"id": "x-echo-only", "allow": {"servers": ["x"], "tools": ["echo"]}}]}}},
        )
        v2 = (await admin.post("/policy/reload")).json()["policy_version"]
        async with agent(url) as client:
            denied = (await outcome(client, "x__add", {"a": 1, "b": 2}))["denied"]
        [row] = await audit_rows(url, kind="decision", tool="add")
    assert denied["policy_version"] == row["policy_version"] == v2
    assert (row["decision"], row["rule_id"]) == ("deny", "default-deny")
