"""Bad input at `/mcp` gets a clear error and the process keeps serving.

The real gateway under uvicorn, the example server behind it over stdio, raw HTTP for what
an SDK client would never send, and an SDK client after each bad request to show the
gateway still answers. A spy on the upstream records what was forwarded, so a refusal can
also be shown to have sent nothing upstream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError

from ..support import raw_client, serve, stdio_upstream, wait_ready, write_config

pytestmark = pytest.mark.anyio

MODES = ["legacy", "2026-07-28"]
MAX_BODY = 2048
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
ECHO = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "everything__echo", "arguments": {"text": "x"}},
}


@dataclass
class Running:
    url: str
    forwarded: list[str] = field(default_factory=list)
    """`method name` of each request the gateway sent to the upstream."""


@pytest.fixture
async def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    config = write_config(tmp_path, {"everything": stdio_upstream()}, max_body_bytes=MAX_BODY)
    async with serve(config) as (url, running):
        await wait_ready(running)
        upstream = running.upstreams["everything"]
        real_call = upstream.call
        gateway = Running(url)

        async def recording_call(method: str, params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            gateway.forwarded.append(f"{method} {params.get('name', '')}".strip())
            return await real_call(method, params, **kwargs)

        monkeypatch.setattr(upstream, "call", recording_call)
        yield gateway


async def assert_still_serving(gateway: Running) -> None:
    async with Client(gateway.url, mode="legacy") as client:
        result = await client.call_tool("everything__echo", {"text": "still here"})
    assert result.structured_content == {"text": "still here"}
    assert gateway.forwarded[-1] == "tools/call echo"


async def post(http: httpx2.AsyncClient, body: bytes | str, **headers: str) -> httpx2.Response:
    return await http.post("/mcp", content=body, headers={**JSON_HEADERS, **headers})


async def handshake(http: httpx2.AsyncClient) -> str:
    response = await post(http, json.dumps(INITIALIZE))
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def rpc_error(response: httpx2.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_malformed_json_is_a_parse_error_with_a_null_id(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        response = await post(http, b'{"jsonrpc": "2.0", "id": 7, "method": ')
    assert response.status_code == 400
    assert response.json()["id"] is None
    assert rpc_error(response)["code"] == -32700
    await assert_still_serving(gateway)


async def test_a_batch_is_refused_and_none_of_it_is_forwarded(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        session_id = await handshake(http)
        response = await post(http, json.dumps([ECHO, {**ECHO, "id": 3}]), **{"mcp-session-id": session_id})
    assert response.status_code == 400
    error = rpc_error(response)
    assert error["code"] == -32600
    assert "batches are not supported" in error["message"].lower()
    assert gateway.forwarded == []
    await assert_still_serving(gateway)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({**INITIALIZE, "jsonrpc": "1.0"}, id="jsonrpc-1.0"),
        pytest.param({k: v for k, v in INITIALIZE.items() if k != "jsonrpc"}, id="no-jsonrpc"),
        pytest.param({**INITIALIZE, "id": None}, id="null-id"),
        pytest.param({**INITIALIZE, "id": True}, id="bool-id"),
        pytest.param({**INITIALIZE, "params": ["positional"]}, id="list-params"),
        pytest.param({"jsonrpc": "2.0", "id": 1}, id="no-method-or-result"),
        pytest.param(42, id="number"),
        pytest.param("initialize", id="string"),
    ],
)
async def test_a_message_with_an_invalid_envelope_is_an_invalid_request(gateway: Running, body: Any) -> None:
    async with raw_client(gateway.url) as http:
        response = await post(http, json.dumps(body))
    assert response.status_code == 400
    assert rpc_error(response)["code"] == -32600
    await assert_still_serving(gateway)


@pytest.mark.parametrize("mode", MODES)
async def test_an_unknown_tool_is_invalid_params_naming_the_tool(gateway: Running, mode: str) -> None:
    async with Client(gateway.url, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("everything__no_such_tool", {})
        added = await client.call_tool("everything__add", {"a": 1, "b": 2})
    assert added.structured_content == {"result": 3}
    assert caught.value.code == -32602
    assert "everything__no_such_tool" in caught.value.message
    assert gateway.forwarded == ["tools/call add"]


@pytest.mark.parametrize("mode", MODES)
async def test_arguments_against_the_input_schema_are_a_tool_error_and_never_forwarded(
    gateway: Running, mode: str
) -> None:
    async with Client(gateway.url, mode=mode) as client:
        result = await client.call_tool("everything__add", {"a": "x", "b": 2})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith("Invalid arguments for everything__add")
    assert "'x' is not of type 'integer'" in text
    assert gateway.forwarded == []
    await assert_still_serving(gateway)


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 512):
        yield b" " * 512


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_max_body_bytes_is_refused_with_413(gateway: Running, declared: bool) -> None:
    padded = json.dumps({**INITIALIZE, "padding": "x" * MAX_BODY}).encode()
    async with raw_client(gateway.url) as http:
        response = await http.post("/mcp", content=padded if declared else _chunks(4 * MAX_BODY), headers=JSON_HEADERS)
    assert response.status_code == 413
    assert str(MAX_BODY) in rpc_error(response)["message"]
    await assert_still_serving(gateway)


async def test_a_client_that_stalls_then_drops_mid_body_is_not_an_error(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    # uvicorn's own logger does not propagate to the root, where caplog listens.
    logging.getLogger("uvicorn.error").addHandler(caplog.handler)
    host, port = gateway.url.split("//")[1].split("/")[0].split(":")
    head = f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    try:
        async with await anyio.connect_tcp(host, int(port)) as stalled:
            await stalled.send(head.encode() + b'{"jsonrpc": "2.0", ')
            await assert_still_serving(gateway)
        await assert_still_serving(gateway)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(caplog.handler)
    # A client going away is routine, not an "Exception in ASGI application" with a traceback.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_foreign_host_header_is_refused_with_421(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        response = await post(http, json.dumps(INITIALIZE), host="evil.example.com")
        near_miss = await post(http, json.dumps(INITIALIZE), host="localhost.evil.example.com:80")
    assert response.status_code == 421
    assert "evil.example.com" in response.text
    assert near_miss.status_code == 421
    await assert_still_serving(gateway)


async def test_a_foreign_origin_is_refused_with_403(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        response = await post(http, json.dumps(INITIALIZE), origin="http://evil.example.com")
        local = await post(http, json.dumps(INITIALIZE), origin="http://localhost:3000")
    assert response.status_code == 403
    assert "http://evil.example.com" in response.text
    assert local.status_code == 200
    await assert_still_serving(gateway)


async def test_a_post_that_is_not_application_json_is_refused_with_415(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        response = await post(http, json.dumps(INITIALIZE), **{"content-type": "text/plain"})
    assert response.status_code == 415
    await assert_still_serving(gateway)


async def test_a_post_without_session_id_after_the_handshake_is_refused_with_400(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        await handshake(http)
        response = await post(http, json.dumps(ECHO))
    assert response.status_code == 400
    assert response.json()["id"] == ECHO["id"]
    assert "Mcp-Session-Id" in rpc_error(response)["message"]
    assert gateway.forwarded == []
    await assert_still_serving(gateway)


async def test_an_unknown_session_id_is_not_found(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        response = await post(http, json.dumps(ECHO), **{"mcp-session-id": "made-up"})
    assert response.status_code == 404
    assert gateway.forwarded == []
    await assert_still_serving(gateway)


async def test_delete_ends_the_session(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        session = {"mcp-session-id": await handshake(http)}
        assert (await post(http, json.dumps(ECHO), **session)).status_code == 200
        deleted = await http.delete("/mcp", headers=session)
        after = await post(http, json.dumps(ECHO), **session)
        deleted_again = await http.delete("/mcp", headers=session)
    assert deleted.status_code == 200
    assert after.status_code == 404
    assert deleted_again.status_code == 404
    await assert_still_serving(gateway)


async def test_get_at_2026_07_28_is_method_not_allowed(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        response = await http.get("/mcp", headers={"accept": "text/event-stream", "mcp-protocol-version": "2026-07-28"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    await assert_still_serving(gateway)


async def test_a_session_holds_one_get_stream_at_a_time(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        listen = {"accept": "text/event-stream", "mcp-session-id": await handshake(http)}
        async with http.stream("GET", "/mcp", headers=listen) as first:
            assert first.status_code == 200
            async with http.stream("GET", "/mcp", headers=listen) as second:
                assert second.status_code == 409
        # Once the first stream's client is gone, the slot is free again.
        with anyio.fail_after(10):
            while True:
                async with http.stream("GET", "/mcp", headers=listen) as again:
                    if again.status_code == 200:
                        break
                    assert again.status_code == 409
                await anyio.sleep(0.05)
    await assert_still_serving(gateway)


async def test_a_notification_is_accepted_with_202_and_no_body(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        session = {"mcp-session-id": await handshake(http)}
        response = await post(http, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), **session)
    assert response.status_code == 202
    assert response.content == b""
    await assert_still_serving(gateway)


async def test_an_unsupported_protocol_version_header_is_refused_with_400(gateway: Running) -> None:
    async with raw_client(gateway.url) as http:
        session = {"mcp-session-id": await handshake(http), "mcp-protocol-version": "1999-01-01"}
        response = await post(http, json.dumps(ECHO), **session)
    assert response.status_code == 400
    assert "1999-01-01" in rpc_error(response)["message"]
    assert gateway.forwarded == []
    await assert_still_serving(gateway)


async def test_a_2026_request_whose_mcp_name_header_disagrees_with_its_body_is_refused(
    gateway: Running,
) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {**ECHO, "params": {**ECHO["params"], "_meta": meta}}  # type: ignore[dict-item]
    headers = {
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "everything__add",
    }
    async with raw_client(gateway.url) as http:
        response = await post(http, json.dumps(body), **headers)
        matching = await post(http, json.dumps(body), **{**headers, "mcp-name": "everything__echo"})
    assert response.status_code == 400
    assert "mcp-name" in rpc_error(response)["message"].lower()
    assert matching.status_code == 200
    assert gateway.forwarded == ["tools/call echo"]
    await assert_still_serving(gateway)
