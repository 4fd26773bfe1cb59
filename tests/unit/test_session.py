"""Downstream sessions: how a handshake-era client gets one, who may use it, how many a
principal may hold, and that idle ones are reaped; plus the per-session ask table."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mcp_gateway.errors import ProtocolError, RpcError
from mcp_gateway.identity import Principal
from mcp_gateway.limits import Limits
from mcp_gateway.protocol import INVALID_PARAMS
from mcp_gateway.proxy.session import AskTable, Session, log_allowed
from mcp_gateway.transport.http import HttpOptions

from .fakes import (
    HANDSHAKE,
    INITIALIZE,
    JSON_AND_SSE,
    WAIT,
    ScriptedServer,
    answer_of,
    hotpath,
    in_session,
    initialize,
    rpc,
    streamed,
)

pytestmark = pytest.mark.anyio

QUICK = HttpOptions(session_idle_timeout=0.02, session_handshake_timeout=0.02)
"""Sessions reaped at once, whether their client spoke after `initialize` or not."""

ADA, BOB = Principal("ops/ada", "ops"), Principal("dev/bob", "dev")


async def test_initialize_opens_a_session_that_later_requests_name_by_its_id() -> None:
    async with hotpath() as gw, gw.client() as http:
        session_id = await initialize(http)
        response = await http.post("/mcp", json=rpc("ping", {}, 2), headers=in_session(session_id))
        assert answer_of(response) == {"jsonrpc": "2.0", "id": 2, "result": {}}
        assert list(gw.endpoint.sessions) == [session_id]


async def test_a_request_without_a_session_id_is_told_to_initialize_first() -> None:
    async with hotpath() as gw, gw.client() as http:
        response = await http.post("/mcp", json=rpc("ping"), headers=JSON_AND_SSE)
        assert response.status_code == 400 and "initialize first" in response.json()["error"]["message"]


async def test_an_unknown_session_id_is_not_found() -> None:
    async with hotpath() as gw, gw.client() as http:
        response = await http.post("/mcp", json=rpc("ping"), headers=in_session("made-up"))
        assert response.status_code == 404 and "Session not found" in response.json()["error"]["message"]


async def test_another_principals_session_is_as_unknown_as_a_made_up_one() -> None:
    async with hotpath() as gw, gw.client() as http:
        gw.principal[0] = ADA
        session_id = await initialize(http)
        gw.principal[0] = BOB
        response = await http.post("/mcp", json=rpc("ping"), headers=in_session(session_id))
        assert response.status_code == 404
        deleted = await http.delete("/mcp", headers=in_session(session_id))
        assert deleted.status_code == 404 and session_id in gw.endpoint.sessions


async def test_delete_ends_the_session() -> None:
    async with hotpath() as gw, gw.client() as http:
        session_id = await initialize(http)
        assert (await http.delete("/mcp", headers=in_session(session_id))).status_code == 200
        assert (await http.post("/mcp", json=rpc("ping"), headers=in_session(session_id))).status_code == 404
        assert gw.router.sessions == set()


async def test_a_principal_over_its_session_quota_is_refused_with_retry_after_and_others_are_not() -> None:
    async with hotpath() as gw, gw.client() as http:
        gw.router.limits = Limits(sessions_per_principal=2)
        gw.principal[0] = ADA
        first = await initialize(http)
        await initialize(http)
        refused = await http.post("/mcp", json=rpc("initialize", INITIALIZE), headers=JSON_AND_SSE)
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert "max_sessions_per_principal" in refused.json()["error"]["message"]
        gw.principal[0] = BOB
        await initialize(http)
        gw.principal[0] = ADA
        await http.delete("/mcp", headers=in_session(first))
        await initialize(http)  # a place was given back


async def test_the_gateway_wide_session_cap_answers_503() -> None:
    async with hotpath(options=HttpOptions(max_sessions=1)) as gw, gw.client() as http:
        gw.principal[0] = ADA
        await initialize(http)
        gw.principal[0] = BOB
        refused = await http.post("/mcp", json=rpc("initialize", INITIALIZE), headers=JSON_AND_SSE)
        assert refused.status_code == 503 and refused.headers["retry-after"]


async def test_an_idle_session_is_reaped_and_its_place_given_back() -> None:
    async with hotpath(options=QUICK) as gw, gw.client() as http:
        gw.router.limits = Limits(sessions_per_principal=1)
        session_id = await initialize(http)
        with anyio.fail_after(WAIT):
            while gw.endpoint.sessions:
                await anyio.sleep(0.01)
        assert (await http.post("/mcp", json=rpc("ping"), headers=in_session(session_id))).status_code == 404
        assert gw.router.sessions == set()
        await initialize(http)


async def test_a_session_with_a_call_in_flight_is_not_reaped_however_long_the_call() -> None:
    release = anyio.Event()

    async def slow(arguments: dict[str, Any], peer: Any) -> dict[str, Any]:
        await release.wait()
        return {"content": []}

    servers = {"files": ScriptedServer({"slow": slow})}
    async with hotpath(servers, options=QUICK) as gw, gw.client() as http:
        busy = await initialize(http)
        call = rpc("tools/call", {"name": "files__slow", "arguments": {}}, 2)

        async def post() -> None:
            await http.post("/mcp", json=call, headers=in_session(busy))

        async with anyio.create_task_group() as tg:
            tg.start_soon(post)
            with anyio.fail_after(WAIT):
                while not gw.servers["files"].calls():
                    await anyio.sleep(0.01)
            # A session opened after the call started, reaped: a sweep has passed the busy one too.
            idle = await initialize(http)
            with anyio.fail_after(WAIT):
                while idle in gw.endpoint.sessions:
                    await anyio.sleep(0.01)
            assert busy in gw.endpoint.sessions
            release.set()


def test_a_log_level_threshold_lets_through_its_level_and_the_more_severe() -> None:
    assert log_allowed("error", "warning") and log_allowed("warning", "warning")
    assert not log_allowed("info", "warning")
    assert log_allowed("debug", None)
    assert log_allowed("made-up", "emergency")  # an unknown level is never silently dropped


async def test_an_answer_from_the_client_reaches_the_request_it_answers() -> None:
    table = AskTable()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        table.answer({"jsonrpc": "2.0", "id": "unrelated", "result": {}})
        assert table.answer({"jsonrpc": "2.0", "id": message["id"], "result": {"roots": []}})

    assert await table.ask(send, "roots/list", {}) == {"roots": []}
    assert sent[0]["method"] == "roots/list"
    assert not table.answer({"jsonrpc": "2.0", "id": sent[0]["id"], "result": {}})  # nothing waits any more


async def test_a_clients_error_answer_or_non_object_result_is_raised() -> None:
    table = AskTable()

    def replying(reply: dict[str, Any]) -> Any:
        async def send(message: dict[str, Any]) -> None:
            table.answer({"jsonrpc": "2.0", "id": message["id"], **reply})

        return send

    with pytest.raises(RpcError, match="declined"):
        await table.ask(replying({"error": {"code": -1, "message": "declined"}}), "sampling/createMessage", {})
    with pytest.raises(ProtocolError) as caught:
        await table.ask(replying({"result": "yes"}), "sampling/createMessage", {})
    assert caught.value.code == INVALID_PARAMS


async def test_a_session_without_an_open_channel_says_it_could_not_send() -> None:
    session = Session(ADA)
    assert await session.send({"jsonrpc": "2.0", "method": "n"}) is False
    got: list[Any] = []

    async def outbox(message: Any) -> None:
        got.append(message)

    session.outbox = outbox
    assert await session.send({"jsonrpc": "2.0", "method": "n"}) is True and len(got) == 1


async def test_a_session_whose_get_stream_is_open_is_not_reaped() -> None:
    async with hotpath(options=QUICK) as gw, gw.client() as http:
        listening = await initialize(http)
        get = {"accept": "text/event-stream", "mcp-session-id": listening, "mcp-protocol-version": HANDSHAKE}
        async with streamed(gw.endpoint, "GET", get) as stream:
            await stream.until(lambda r: ": stream open" in r.text)
            idle = await initialize(http)
            with anyio.fail_after(WAIT):
                while idle in gw.endpoint.sessions:
                    await anyio.sleep(0.01)
            assert listening in gw.endpoint.sessions
