"""`log_format: json` and the access line: one JSON object a line, with a request's
principal, team, method, target, decision, outcome, latency and trace id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp_gateway import logs
from mcp_gateway.logs import JsonFormatter

from ..support import GatewayProcess, agent, create_key, serve, stdio_upstream, wait_ready, write_config, write_policies

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
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


@pytest.fixture
def access() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("mcp_gateway.access")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def test_a_json_record_is_one_line_with_its_fields_and_no_url_password() -> None:
    record = logging.LogRecord(
        "mcp_gateway.x", logging.WARNING, __file__, 1, "bad %s", ("line\nINFO forged https://u:secret@h/",), None
    )
    record.team = "ops"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "mcp_gateway.x" and entry["team"] == "ops"
    assert entry["message"].startswith("bad line\nINFO forged") and "secret" not in entry["message"]
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"


def test_setup_turns_the_access_line_on_only_when_asked_and_json_formats_every_record() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access = logging.getLogger("mcp_gateway.access")
    try:
        root.handlers = []
        logs.setup("info", "json", access=False)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert not access.isEnabledFor(logging.INFO)
        root.handlers = []
        logs.setup("info", "text", access=True)
        assert isinstance(root.handlers[0].formatter, logs.SafeFormatter)
        assert access.isEnabledFor(logging.INFO)
    finally:
        root.handlers = handlers
        root.setLevel(level)
        access.setLevel(logging.NOTSET)
        logs._format = "text"


@pytest.mark.anyio
async def test_each_request_has_an_access_line_with_its_decision_outcome_and_the_clients_trace_id(
    tmp_path: Path, access: io.StringIO
) -> None:
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(tmp_path, {"x": stdio_upstream()}, auth="keys", policies="policies")
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        key = await create_key(url, "ops", "bot")
        headers = {"Authorization": f"Bearer {key}", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            await client.call_tool("x__echo", {"text": "hi"})
            with pytest.raises(MCPError):
                await client.call_tool("x__add", {"a": 1, "b": 2})
    lines = [json.loads(line) for line in access.getvalue().splitlines()]
    calls = [line for line in lines if line["method"] == "tools/call"]
    assert len(calls) == 2
    principal = calls[0]["principal"]
    for line in calls:
        assert line["logger"] == "mcp_gateway.access" and line["level"] == "INFO"
        assert line["team"] == "ops" and line["principal"] == principal and principal.startswith("ops/")
        assert line["trace_id"] == TRACE  # from the client's header, though the gateway exports no spans
        assert isinstance(line["latency_ms"], float)
    assert (calls[0]["target"], calls[0]["decision"], calls[0]["outcome"]) == ("echo", "allow", "ok")
    assert (calls[1]["target"], calls[1]["decision"], calls[1]["outcome"]) == ("add", "deny", "denied")
    assert {line["method"] for line in lines} >= {"initialize", "tools/call"}


@pytest.mark.anyio
async def test_serve_with_log_format_json_writes_every_line_as_json_with_the_access_lines(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"x": stdio_upstream()}, access_log=True)
    gateway = GatewayProcess(config, "--log-format", "json")
    await gateway.start()
    try:
        async with agent(gateway.url) as client:
            await client.call_tool("x__echo", {"text": "hi"})
    finally:
        gateway.stop()
    lines = [json.loads(line) for line in gateway.log.read_text().splitlines() if line.strip()]
    assert {"mcp_gateway", "uvicorn.error", "mcp_gateway.access"} <= {line["logger"] for line in lines}
    call = next(line for line in lines if line["logger"] == "mcp_gateway.access" and line["method"] == "tools/call")
    assert (call["principal"], call["team"], call["target"], call["decision"], call["outcome"]) == (
        "local/local",
        "local",
        "echo",
        "allow",
        "ok",
    )
