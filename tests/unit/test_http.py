"""The `/mcp` endpoint called in process (httpx's ASGI transport, or ASGI messages read as they
are written): what each malformed request is answered with, how answers are framed for each
era, and the streams a handshake-era session holds."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from mcp_gateway.protocol import INVALID_REQUEST, PARSE_ERROR, UNSUPPORTED_PROTOCOL_VERSION
from mcp_gateway.transport.http import HttpOptions

from .fakes import (
    HANDSHAKE,
    JSON_AND_SSE,
    RICH_TOOLS,
    WAIT,
    ScriptedServer,
    events_of,
    hotpath,
    in_session,
    initialize,
    modern_post,
    rpc,
    streamed,
)

pytestmark = pytest.mark.anyio

PING = rpc("ping")


@pytest.mark.parametrize(
    ("headers", "status", "says"),
    [
        ({"accept": "application/json", "content-type": "text/plain"}, 415, "Content-Type must be application/json"),
        ({"accept": "text/event-stream", "content-type": "application/json"}, 406, "Accept must include"),
    ],
)
async def test_a_post_in_the_wrong_media_type_is_refused_before_its_body_is_read(
    headers: dict[str, str], status: int, says: str
) -> None:
    async with hotpath() as gw, gw.client() as http:
        response = await http.post("/mcp", content=b"{", headers=headers)
        assert response.status_code == status and says in response.text


async def test_a_body_over_the_limit_is_refused_whether_declared_or_streamed() -> None:
    async with hotpath(options=HttpOptions(max_body=64)) as gw, gw.client() as http:
        big = json.dumps(rpc("tools/call", {"name": "x" * 100})).encode()
        declared = await http.post("/mcp", content=big, headers=JSON_AND_SSE)
        assert declared.status_code == 413 and "exceeds 64 bytes" in declared.json()["error"]["message"]

        async def chunks() -> Any:
            for i in range(0, len(big), 16):
                yield big[i : i + 16]

        streamed_body = await http.post("/mcp", content=chunks(), headers=JSON_AND_SSE)
        assert streamed_body.status_code == 413


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", PARSE_ERROR), (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', INVALID_REQUEST)],
)
async def test_a_body_that_is_not_one_json_rpc_message_is_a_400_with_its_code(body: bytes, code: int) -> None:
    async with hotpath() as gw, gw.client() as http:
        response = await http.post("/mcp", content=body, headers=JSON_AND_SSE)
        assert response.status_code == 400 and response.json()["error"]["code"] == code


async def test_an_unsupported_protocol_version_header_is_a_400_naming_it() -> None:
    async with hotpath() as gw, gw.client() as http:
        headers = {**JSON_AND_SSE, "mcp-protocol-version": "1999-01-01"}
        response = await http.post("/mcp", json=PING, headers=headers)
        assert response.status_code == 400 and "1999-01-01" in response.json()["error"]["message"]


async def test_an_unsupported_protocol_version_error_lists_the_supported_versions_and_the_requested_one() -> None:
    async with hotpath() as gw, gw.client() as http:
        headers = {**JSON_AND_SSE, "mcp-protocol-version": "v999.0.0"}
        response = await http.post("/mcp", json=PING, headers=headers)
        error = response.json()["error"]
        assert response.status_code == 400 and error["code"] == UNSUPPORTED_PROTOCOL_VERSION
        assert error["data"] == {"supported": ["2026-07-28"], "requested": "v999.0.0"}


async def test_a_refused_credential_is_answered_with_its_status_and_challenge() -> None:
    async with hotpath() as gw, gw.client() as http:
        gw.principal[0] = (401, "Unauthorized: no key", [(b"www-authenticate", b'Bearer realm="x"')])  # type: ignore[call-overload]
        response = await http.post("/mcp", json=PING, headers=JSON_AND_SSE)
        assert response.status_code == 401 and response.headers["www-authenticate"] == 'Bearer realm="x"'


async def test_a_handshake_call_is_answered_as_a_stream_and_a_modern_one_as_plain_json() -> None:
    async with hotpath() as gw, gw.client() as http:
        session_id = await initialize(http)
        call = rpc("tools/call", {"name": "files__echo", "arguments": {"text": "hi"}}, 2)
        old = await http.post("/mcp", json=call, headers=in_session(session_id))
        assert old.headers["content-type"] == "text/event-stream"
        assert json.loads(events_of(old.text)[-1]["data"])["result"]["content"][0]["text"] == "hi"
        body, headers = modern_post("tools/call", {"name": "files__echo", "arguments": {"text": "hi"}})
        new = await http.post("/mcp", json=body, headers=headers)
        assert new.headers["content-type"] == "application/json"
        assert new.json()["result"]["resultType"] == "complete"


async def test_a_modern_request_whose_headers_disagree_with_its_body_is_refused_unforwarded() -> None:
    async with hotpath() as gw, gw.client() as http:
        body, headers = modern_post("tools/call", {"name": "files__echo", "arguments": {"text": "hi"}})
        response = await http.post("/mcp", json=body, headers={**headers, "mcp-name": "files__other"})
        assert response.status_code == 400 and response.json()["error"]["code"] == -32020
        assert gw.servers["files"].calls() == []


async def test_whitespace_around_a_routing_header_value_is_not_part_of_it() -> None:
    async with hotpath() as gw, gw.client() as http:
        body, headers = modern_post("tools/call", {"name": "files__echo", "arguments": {"text": "hi"}})
        padded = {**headers, "mcp-name": "  files__echo \t", "mcp-method": " tools/call "}
        response = await http.post("/mcp", json=body, headers=padded)
        assert response.status_code == 200 and response.json()["result"]["content"][0]["text"] == "hi"


async def test_a_modern_request_without_its_envelope_is_refused() -> None:
    async with hotpath() as gw, gw.client() as http:
        body, headers = modern_post("tools/list", {})
        del body["params"]["_meta"]
        response = await http.post("/mcp", json=body, headers=headers)
        assert response.status_code == 400 and "_meta" in response.json()["error"]["message"]


async def test_there_is_no_get_stream_at_2026_07_28_and_unknown_http_methods_are_405() -> None:
    async with hotpath() as gw, gw.client() as http:
        get = await http.get("/mcp", headers={"accept": "text/event-stream", "mcp-protocol-version": "2026-07-28"})
        assert get.status_code == 405 and get.headers["allow"] == "POST"
        put = await http.put("/mcp", content=b"")
        assert put.status_code == 405 and "POST" in put.headers["allow"]


async def test_notifications_and_responses_are_accepted_with_202() -> None:
    async with hotpath() as gw, gw.client() as http:
        session_id = await initialize(http)
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post("/mcp", json=note, headers=in_session(session_id))).status_code == 202
        stray = {"jsonrpc": "2.0", "id": "gw-99", "result": {}}
        assert (await http.post("/mcp", json=stray, headers=in_session(session_id))).status_code == 202


async def test_a_client_answers_the_upstreams_question_by_posting_its_response_while_the_call_streams() -> None:
    async with hotpath({"files": ScriptedServer(RICH_TOOLS)}) as gw, gw.client() as http:
        session_id = await initialize(http, capabilities={"elicitation": {}})
        call = rpc("tools/call", {"name": "files__ask", "arguments": {}}, 2)
        async with streamed(gw.endpoint, "POST", in_session(session_id), call) as response:
            await response.until(lambda r: bool(r.events()))
            [question] = response.events()
            assert question["method"] == "elicitation/create"
            reply = {"jsonrpc": "2.0", "id": question["id"], "result": {"action": "accept", "content": {"name": "Ada"}}}
            assert (await http.post("/mcp", json=reply, headers=in_session(session_id))).status_code == 202
            await response.until(lambda r: r.ended)
            assert response.events()[-1]["result"]["content"][0]["text"] == "hello Ada"


async def test_notifications_cancelled_stops_the_call_answers_nothing_and_cancels_it_upstream() -> None:
    server = ScriptedServer(RICH_TOOLS)
    async with hotpath({"files": server}) as gw, gw.client() as http:
        session_id = await initialize(http)
        call = rpc("tools/call", {"name": "files__slow", "arguments": {}}, 7)
        async with streamed(gw.endpoint, "POST", in_session(session_id), call) as response:
            with anyio.fail_after(WAIT):
                while not server.calls():
                    await anyio.sleep(0.01)
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
            assert (await http.post("/mcp", json=cancel, headers=in_session(session_id))).status_code == 202
            await response.until(lambda r: r.ended)
            assert response.status == 204 and response.text == ""
        with anyio.fail_after(WAIT):
            while server.calls()[0]["id"] not in server.cancelled:
                await anyio.sleep(0.01)


async def test_a_session_holds_one_get_stream_that_carries_its_notifications_until_delete() -> None:
    server = ScriptedServer()
    async with hotpath({"files": server}) as gw, gw.client() as http:
        session_id = await initialize(http)
        get = {"accept": "text/event-stream", "mcp-session-id": session_id, "mcp-protocol-version": HANDSHAKE}
        async with streamed(gw.endpoint, "GET", get) as stream:
            await stream.until(lambda r: ": stream open" in r.text)
            assert stream.status == 200 and stream.headers["content-type"] == "text/event-stream"
            second = await http.get("/mcp", headers=get)
            assert second.status_code == 409
            server.tools["new"] = server.tools["echo"]
            await server.deliver({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, None)
            await stream.until(lambda r: bool(r.events()))
            assert stream.events() == [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}]
            assert (await http.delete("/mcp", headers=in_session(session_id))).status_code == 200
            await stream.until(lambda r: r.ended)
            assert stream.ended


async def test_a_get_that_does_not_accept_an_event_stream_is_406() -> None:
    async with hotpath() as gw, gw.client() as http:
        session_id = await initialize(http)
        response = await http.get("/mcp", headers={**in_session(session_id), "accept": "application/json"})
        assert response.status_code == 406


async def test_a_listen_stream_needs_an_event_stream_accept() -> None:
    async with hotpath() as gw, gw.client() as http:
        body, headers = modern_post("subscriptions/listen", {"notifications": {"toolsListChanged": True}})
        response = await http.post("/mcp", json=body, headers={**headers, "accept": "application/json"})
        assert response.status_code == 406


async def test_a_modern_listen_stream_is_acknowledged_then_carries_list_changed() -> None:
    server = ScriptedServer()
    async with hotpath({"files": server}) as gw:
        body, headers = modern_post("subscriptions/listen", {"notifications": {"toolsListChanged": True}}, id="sub")
        async with streamed(gw.endpoint, "POST", headers, body) as stream:
            await stream.until(lambda r: bool(r.events()))
            [ack] = stream.events()
            assert ack["method"] == "notifications/subscriptions/acknowledged"
            assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub"
            server.tools["new"] = server.tools["echo"]
            await server.deliver({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, None)
            await stream.until(lambda r: len(r.events()) == 2)
            assert stream.events()[1]["method"] == "notifications/tools/list_changed"
        assert gw.router.listeners == set()
