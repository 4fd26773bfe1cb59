"""One trace from agent to tool server: the gateway's spans, exported over real OTLP/HTTP to a
receiver on a loopback port, have the client's `traceparent` (HTTP header, or
`params._meta.traceparent`) as parent; the audit wait and the upstream call are its
children; the upstream receives the upstream span's `traceparent` (in `_meta`, and as the
HTTP header when it is an HTTP server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from ..support import RECORDER, admin_client, free_port, serve, wait_for_port, wait_ready, write_config
from .otlp import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.anyio

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
META_TRACE = "0af7651916cd43dd8448eb211c80319c"
META_SPAN = "b7ad6b7169203331"
SERVER, CLIENT = 2, 3  # the protobuf's SpanKind numbers


@asynccontextmanager
async def http_recorder(log: Path) -> AsyncIterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(RECORDER), "--http", str(port)],
        env={**os.environ, "RECORDER_LOG": str(log)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_port(port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.kill()
        process.wait(10)


def received(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def traceparent(span: ReceivedSpan) -> str:
    return f"00-{span.trace_id}-{span.span_id}-01"


async def test_one_trace_runs_from_the_agent_through_the_gateway_to_the_tool_server(tmp_path: Path) -> None:
    stdio_log, http_log = tmp_path / "stdio.log", tmp_path / "http.log"
    stdio_log.touch()
    http_log.touch()
    with OtlpReceiver() as receiver:
        async with http_recorder(http_log) as http_url:
            config = write_config(
                tmp_path,
                {
                    "s": {"command": "python", "args": [str(RECORDER)], "env": {"RECORDER_LOG": str(stdio_log)}},
                    "h": {"url": http_url},
                },
                otlp_endpoint=receiver.url,
            )
            headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
            async with serve(config) as (url, gw):
                await wait_ready(gw)
                async with (
                    httpx2.AsyncClient(headers=headers, timeout=60) as http,
                    Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
                ):
                    await client.call_tool("s__trace", {})
                    await client.call_tool("h__trace", {})
                async with (
                    httpx2.AsyncClient(timeout=60) as http,
                    Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
                ):
                    # As MCP clients send it: in the request's `_meta`, no header.
                    await client.call_tool("s__trace", {}, meta={"traceparent": f"00-{META_TRACE}-{META_SPAN}-01"})
                    async with admin_client(url, None) as admin:
                        engaged = await admin.post(
                            "/kill-switches", json={"scope": "server", "server": "s", "reason": "test"}
                        )
                        assert engaged.status_code == 201, engaged.text
                    with pytest.raises(MCPError):
                        await client.call_tool("s__trace", {})
            # Leaving the gateway flushed its spans to the receiver.

    spans = receiver.spans
    assert {s.service for s in spans} == {"mcp-gateway"}
    by_id = {s.span_id: s for s in spans}
    calls = [s for s in spans if s.kind == SERVER and s.name == "tools/call"]
    header_calls = [s for s in calls if s.trace_id == CLIENT_TRACE]
    assert [s.attributes["mcp_gateway.server"] for s in header_calls] == ["s", "h"]
    for call in header_calls:
        assert call.parent_span_id == CLIENT_SPAN
        assert call.attributes["mcp_gateway.decision"] == "allow"
        assert call.attributes["mcp_gateway.rule_id"] == "local-all"
        assert call.attributes["mcp_gateway.policy_version"] == gw.snapshots.current.policy.policy_version
        assert call.attributes["mcp_gateway.outcome"] == "ok"
        children = [s for s in spans if s.parent_span_id == call.span_id]
        assert {s.name for s in children} == {"audit commit", f"tools/call {call.attributes['mcp_gateway.server']}"}
        assert all(s.trace_id == CLIENT_TRACE for s in children)
    # Every request of the header's client (initialize, tools/list ...) is in its trace too.
    assert all(s.parent_span_id == CLIENT_SPAN for s in spans if s.kind == SERVER and s.trace_id == CLIENT_TRACE)

    meta_calls = [s for s in calls if s.trace_id == META_TRACE]
    assert len(meta_calls) == 1 and meta_calls[0].parent_span_id == META_SPAN

    killed = [s for s in calls if s.attributes.get("mcp_gateway.kill_switch_id") is not None]
    assert len(killed) == 1
    assert killed[0].attributes["mcp_gateway.decision"] == "deny"
    assert killed[0].attributes["mcp_gateway.kill_switch_id"] == engaged.json()["id"]
    assert killed[0].attributes["mcp_gateway.outcome"] == "denied"

    # What the upstreams received names the gateway's upstream-call span (a CLIENT span of
    # the same trace, child of the request span).
    upstream_spans = {s.span_id: s for s in spans if s.kind == CLIENT}
    stdio_seen, http_seen = received(stdio_log), received(http_log)
    assert len(stdio_seen) == 2 and len(http_seen) == 1
    for seen, server in ((stdio_seen[0], "s"), (http_seen[0], "h"), (stdio_seen[1], "s")):
        sent = seen["meta"]
        span = upstream_spans[sent.split("-")[2]]
        assert sent == traceparent(span)
        assert span.name == f"tools/call {server}"
        assert by_id[span.parent_span_id].kind == SERVER
    assert stdio_seen[0]["meta"].split("-")[1] == CLIENT_TRACE
    assert stdio_seen[1]["meta"].split("-")[1] == META_TRACE
    assert http_seen[0]["header"] == http_seen[0]["meta"]  # the HTTP upstream has it as a header too
    assert stdio_seen[0]["header"] is None
