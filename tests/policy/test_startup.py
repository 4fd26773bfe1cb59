"""`serve` applies its policy directory on start (SQLite and PostgreSQL). A broken bundle
at start keeps the live policy if there is one, and refuses to start if there is none
(it would only deny everything)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..support import GatewayProcess, agent, serve, wait_ready, write_policies
from .live import get, outcome, policy_gateway

pytestmark = pytest.mark.anyio

ALLOW = {"teams": {"local": {"description": "mine", "rules": [{"id": "local-x", "allow": {"servers": ["x"]}}]}}}
BROKEN = "teams:\n  local:\n    rules:\n      - id: local-x\n        allow: {servers: [x]\n"


async def test_start_applies_the_directory_once(tmp_path: Path, store_url: str) -> None:
    write_policies(tmp_path / "policies", ALLOW)
    config = policy_gateway(tmp_path, store_url)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        first = await get(url, "/policy")
        teams = await get(url, "/teams")
    assert first["history"][0]["actor"] == "mcp-gateway (start)" and first["history"][0]["source"] == "bundle"
    assert first["directory"] == str((tmp_path / "policies").resolve())
    assert {t["id"]: t["description"] for t in teams["items"]}.get("local") == "mine"
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        second = await get(url, "/policy")
    # The same content: no new version on a restart.
    assert second["policy_version"] == first["policy_version"] and len(second["history"]) == 1


async def test_a_broken_bundle_at_start_keeps_the_live_policy(tmp_path: Path, store_url: str) -> None:
    policies = write_policies(tmp_path / "policies", ALLOW)
    config = policy_gateway(tmp_path, store_url)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        v1 = (await get(url, "/policy"))["policy_version"]
    (policies / "policy.yaml").write_text(BROKEN)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        status = await get(url, "/status")
        async with agent(url) as client:
            allowed = await outcome(client, "x__echo", {"text": "still"})
    assert status["snapshot"]["policy_version"] == v1
    [error] = status["policy_reload"]["error"]
    assert error.startswith(f"{(policies / 'policy.yaml').resolve()}:5: invalid YAML")
    assert allowed["allowed"].structured_content == {"text": "still"}


async def test_a_broken_bundle_and_no_live_policy_refuses_to_start(tmp_path: Path, store_url: str) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "policy.yaml").write_text(BROKEN)
    process = GatewayProcess(policy_gateway(tmp_path, store_url))
    try:
        with pytest.raises(AssertionError, match="gateway exited with") as exited:
            await process.start()
    finally:
        process.stop()
    assert f"{(policies / 'policy.yaml').resolve()}:5: invalid YAML" in str(exited.value)
