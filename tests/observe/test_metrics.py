"""`/metrics` after known traffic: the exact counts of calls by target, decision and outcome,
denials by reason, the latency histograms holding every call, the state gauges; and who
may read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from ..support import (
    ADMIN_TOKEN,
    admin_client,
    agent,
    create_key,
    serve,
    stdio_upstream,
    wait_ready,
    write_config,
    write_policies,
)

pytestmark = pytest.mark.anyio

POLICY = {
    "teams": {
        "ops": {
            "rules": [
                {"id": "ops-x", "allow": {"servers": ["x"]}},
                {"id": "no-add", "deny": {"servers": ["x"], "tools": ["add"]}},
            ]
        }
    }
}
METRICS_TOKEN = "scrape-only-token-for-tests"


@pytest.fixture
async def gateway(tmp_path: Path):  # type: ignore[no-untyped-def]
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(
        tmp_path, {"x": stdio_upstream()}, auth="keys", policies="policies", metrics_token=METRICS_TOKEN
    )
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url, gw


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str, token: str | None) -> tuple[httpx2.Response, Samples]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(base_url=url.rsplit("/mcp", 1)[0], headers=headers, timeout=30) as http:
        response = await http.get("/metrics")
    samples: Samples = {}
    if response.status_code == 200:
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def call_labels(tool: str, decision: str, outcome: str, server: str = "x") -> dict[str, str]:
    return {
        "server": server,
        "tool": tool,
        "team": "ops",
        "method": "tools/call",
        "decision": decision,
        "outcome": outcome,
    }


async def test_metrics_count_known_traffic_exactly_and_hold_each_calls_latency(gateway: Any) -> None:
    url, gw = gateway
    key = await create_key(url, "ops", "bot")
    killed: list[Any] = []
    async with agent(url, key) as client:
        for n in range(3):
            await client.call_tool("x__echo", {"text": f"hello {n}"})
        with pytest.raises(MCPError):
            await client.call_tool("x__add", {"a": 1, "b": 2})  # denied by rule no-add
        with pytest.raises(MCPError):
            await client.call_tool("x__no_such_tool", {})  # a name the catalog does not have

        async def slow() -> None:
            try:
                await client.call_tool("x__slow", {"seconds": 60})
            except MCPError as exc:
                killed.append(exc.error.data["reason"])

        async with admin_client(url) as admin, anyio.create_task_group() as tg:
            tg.start_soon(slow)
            with anyio.fail_after(20):
                while len(gw.governance.inflight) < 1:
                    await anyio.sleep(0.02)
            _, during = await scrape(url, ADMIN_TOKEN)
            engaged = await admin.post(
                "/kill-switches", json={"scope": "tool", "server": "x", "tool": "slow", "reason": "test"}
            )
            assert engaged.status_code == 201, engaged.text
    assert killed == ["kill_switch"]
    assert value(during, "mcp_gateway_calls_in_flight") == 1

    response, samples = await scrape(url, ADMIN_TOKEN)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    calls = "mcp_gateway_calls_total"
    assert value(samples, calls, **call_labels("echo", "allow", "ok")) == 3
    assert value(samples, calls, **call_labels("add", "deny", "denied")) == 1
    assert value(samples, calls, **call_labels("_unknown", "deny", "denied", server="_unknown")) == 1
    assert value(samples, calls, **call_labels("slow", "allow", "killed")) == 1
    assert sum(v for (name, _), v in samples.items() if name == calls) == 6
    assert not any("principal" in dict(labels) for _, labels in samples)  # never a label
    assert value(samples, "mcp_gateway_denials_total", reason="rule") == 1
    assert value(samples, "mcp_gateway_denials_total", reason="unknown_target") == 1
    assert sum(v for (name, _), v in samples.items() if name == "mcp_gateway_denials_total") == 2
    assert value(samples, "mcp_gateway_requests_total", method="tools/call", team="ops", result="ok") == 3
    assert value(samples, "mcp_gateway_requests_total", method="tools/call", team="ops", result="error") == 3

    # Every forwarded call (3 echoes and the killed slow one) is in the upstream histogram,
    # every tools/call request in the added-latency one; buckets resolve 0.1 ms to 10 ms.
    upstream = "mcp_gateway_upstream_latency_seconds"
    assert value(samples, f"{upstream}_count", server="x") == 4
    assert value(samples, f"{upstream}_bucket", server="x", le="+Inf") == 4
    assert value(samples, f"{upstream}_sum", server="x") > 0
    counts = [value(samples, f"{upstream}_bucket", server="x", le=le) for le in ("0.0001", "0.001", "0.01", "+Inf")]
    assert counts == sorted(counts)  # cumulative, as the exposition format has it
    added = "mcp_gateway_added_latency_seconds"
    assert value(samples, f"{added}_count", method="tools/call") == 6
    buckets = {dict(labels)["le"] for (name, labels) in samples if name == f"{added}_bucket"}
    assert {"0.0001", "0.0005", "0.001", "0.005", "0.01"} <= buckets

    assert value(samples, "mcp_gateway_calls_in_flight") == 0
    assert value(samples, "mcp_gateway_kill_switches_engaged", scope="tool") == 1
    assert value(samples, "mcp_gateway_kill_switches_engaged", scope="global") == 0
    assert value(samples, "mcp_gateway_upstream_up", server="x") == 1
    assert value(samples, "mcp_gateway_upstream_restarts_total", server="x") == 0
    assert value(samples, "mcp_gateway_policy_version") == gw.snapshots.current.policy.policy_version
    assert value(samples, "mcp_gateway_audit_commit_batch_rows_count") > 0
    assert ("mcp_gateway_audit_queue_depth", frozenset()) in samples
    assert ("mcp_gateway_snapshot_age_seconds", frozenset()) in samples


async def test_metrics_answer_the_metrics_token_and_any_operator_role_and_refuse_anyone_else(gateway: Any) -> None:
    url, _ = gateway
    key = await create_key(url, "ops", "bot")
    async with admin_client(url) as admin:
        made = await admin.post("/admin-tokens", json={"name": "oncall", "role": "viewer"})
        assert made.status_code == 201, made.text
    viewer = made.json()["token"]
    for token in (METRICS_TOKEN, ADMIN_TOKEN, viewer):
        response, samples = await scrape(url, token)
        assert response.status_code == 200 and samples
    for token in (None, key, "wrong"):
        response, _ = await scrape(url, token)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    async with admin_client(url, METRICS_TOKEN) as admin:  # the scrape token opens nothing else
        assert (await admin.get("/kill-switches")).status_code == 401


async def test_without_any_token_metrics_answer_loopback_callers_and_metrics_false_turns_them_off(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, {"x": stdio_upstream()})  # auth: none, no admin token
    async with serve(config) as (url, _):
        response, samples = await scrape(url, None)
        assert response.status_code == 200 and value(samples, "mcp_gateway_calls_in_flight") == 0
        async with httpx2.AsyncClient(timeout=30) as http:  # a name rebound to 127.0.0.1 is not this machine
            rebound = await http.get(url.replace("/mcp", "/metrics"), headers={"Host": "evil.example"})
        assert rebound.status_code == 401
    config = write_config(tmp_path, {"x": stdio_upstream()}, metrics=False)
    async with serve(config) as (url, _):
        response, _ = await scrape(url, None)
        assert response.status_code == 404
