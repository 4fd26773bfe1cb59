"""What an upstream asks of the client mid-call, across the two protocol eras: relayed to a
handshake-era client as a request, turned into an `input_required` round trip for a
2026-07-28 client (the upstream call parked meanwhile), and bounded either way."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mcp_gateway.errors import GATEWAY_DENIED, Denied, ProtocolError
from mcp_gateway.identity import LOCAL, Principal
from mcp_gateway.jsonrpc import Message
from mcp_gateway.protocol import INVALID_PARAMS, INVALID_REQUEST
from mcp_gateway.proxy import bridge
from mcp_gateway.proxy.session import Call, Session

from .fakes import ALLOW_LOCAL, HANDSHAKE, MODERN, RICH_TOOLS, UPSTREAM_STATE, WAIT, Hotpath, ScriptedServer, hotpath

pytestmark = pytest.mark.anyio

ELICIT = {"elicitation": {}}
ACCEPT = {"action": "accept", "content": {"name": "Ada"}}
INTRUDER = Principal("local/intruder", "local")


def call(params: dict[str, Any], *, era: str, who: Principal = LOCAL, **fields: Any) -> Call:
    session = Session(who, protocol_version=era, ephemeral=era == MODERN)
    return Call(session, 1, "tools/call", params, protocol_version=era, **fields)


def servers(attributed: bool = False) -> dict[str, ScriptedServer]:
    return {"files": ScriptedServer(RICH_TOOLS, attributed=attributed)}


async def start(gw: Hotpath, who: Principal = LOCAL) -> dict[str, Any]:
    """A 2026-07-28 call of the eliciting tool: its `input_required` answer."""
    with anyio.fail_after(WAIT):
        return await gw.router.handle(
            call({"name": "files__ask", "arguments": {}}, era=MODERN, who=who, client_capabilities=ELICIT)
        )


async def resume(
    gw: Hotpath, state: str, responses: Any, who: Principal = LOCAL, name: str = "files__ask", **arguments: Any
) -> Any:
    params = {"name": name, "arguments": arguments, "requestState": state, "inputResponses": responses}
    with anyio.fail_after(WAIT):
        return await gw.router.handle(call(params, era=MODERN, who=who, client_capabilities=ELICIT))


async def test_a_handshake_client_is_asked_the_upstreams_question_mid_call_and_its_answer_goes_back() -> None:
    asked: list[tuple[str, dict[str, Any]]] = []

    async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        asked.append((method, params))
        return ACCEPT

    async with hotpath(servers()) as gw:
        result = await gw.router.handle(
            call({"name": "files__ask", "arguments": {}}, era=HANDSHAKE, ask=ask, client_capabilities=ELICIT)
        )
        assert result["content"][0]["text"] == "hello Ada"
        assert [method for method, _ in asked] == ["elicitation/create"]


async def test_a_client_that_did_not_declare_the_capability_is_never_asked_and_the_upstream_is_told_why() -> None:
    async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("asked a client that cannot answer")

    async with hotpath(servers()) as gw:
        result = await gw.router.handle(call({"name": "files__ask", "arguments": {}}, era=HANDSHAKE, ask=ask))
        assert "did not declare the 'elicitation' capability" in result["content"][0]["text"]


async def test_a_modern_client_gets_input_required_then_resumes_the_same_upstream_call_with_its_answer() -> None:
    async with hotpath(servers()) as gw:
        first = await start(gw)
        assert first["resultType"] == "input_required"
        assert first["inputRequests"]["r1"]["method"] == "elicitation/create"
        assert first["requestState"].startswith(bridge.STATE_PREFIX)
        final = await resume(gw, first["requestState"], {"r1": ACCEPT})
        assert final["resultType"] == "complete" and final["content"][0]["text"] == "hello Ada"
        assert len(gw.servers["files"].calls()) == 1  # one upstream call, resumed, not retried
        legs = gw.audit.decisions()
        assert len(legs) == 2 and legs[0]["call_id"] == legs[1]["call_id"]


async def test_another_principal_cannot_resume_a_parked_call_and_the_owner_still_can() -> None:
    async with hotpath(servers()) as gw:
        first = await start(gw)
        with pytest.raises(ProtocolError) as caught:
            await resume(gw, first["requestState"], {"r1": ACCEPT}, who=INTRUDER)
        assert caught.value.code == INVALID_PARAMS and "unknown or expired" in caught.value.message
        assert (await resume(gw, first["requestState"], {"r1": ACCEPT}))["content"][0]["text"] == "hello Ada"


async def test_a_resume_naming_another_tool_is_refused_and_the_call_stays_parked() -> None:
    async with hotpath(servers()) as gw:
        first = await start(gw)
        with pytest.raises(ProtocolError, match="belongs to a call of another tool"):
            await resume(gw, first["requestState"], {"r1": ACCEPT}, name="files__echo", text="x")
        assert (await resume(gw, first["requestState"], {"r1": ACCEPT}))["content"][0]["text"] == "hello Ada"


async def test_a_question_the_client_left_unanswered_is_an_error_for_the_upstream_not_a_wait() -> None:
    async with hotpath(servers()) as gw:
        first = await start(gw)
        final = await resume(gw, first["requestState"], {})
        assert final["isError"] is True and "did not answer" in final["content"][0]["text"]


async def test_a_principal_may_hold_only_so_many_parked_calls() -> None:
    # Attributed (as over HTTP): two calls asking at once are each told apart.
    async with hotpath(servers(attributed=True), rules=ALLOW_LOCAL, max_parked=1) as gw:
        first = await start(gw)
        with pytest.raises(Denied) as caught:
            await start(gw)
        assert caught.value.code == GATEWAY_DENIED and caught.value.data["reason"] == "parked_call_limit"  # type: ignore[index]
        await resume(gw, first["requestState"], {"r1": ACCEPT})
        assert (await start(gw))["resultType"] == "input_required"  # the place was given back


async def test_input_requests_of_a_modern_upstream_are_asked_of_a_handshake_client_one_by_one() -> None:
    asked: list[str] = []

    async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        asked.append(params["message"])
        return ACCEPT

    client = call({}, era=HANDSHAKE, ask=ask, client_capabilities=ELICIT)
    result = {
        "resultType": "input_required",
        "inputRequests": {
            "a": {"method": "elicitation/create", "params": {"message": "first"}},
            "b": {"method": "elicitation/create", "params": {"message": "second"}},
        },
        "requestState": "opaque",
    }
    extra = await bridge.fulfil(client, result)
    assert extra == {"inputResponses": {"a": ACCEPT, "b": ACCEPT}, "requestState": "opaque"}
    assert asked == ["first", "second"]


@pytest.mark.parametrize(
    ("requests", "code"),
    [
        ([1], INVALID_PARAMS),
        ({"a": "not a request"}, INVALID_PARAMS),
        ({"a": {"method": "sampling/createMessage"}}, INVALID_REQUEST),  # not a declared capability
        ({"a": {"method": "tools/call"}}, INVALID_REQUEST),  # not something relayed to clients
    ],
)
async def test_malformed_or_unrelayable_input_requests_are_refused_without_asking(requests: Any, code: int) -> None:
    async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("asked anyway")

    with pytest.raises(ProtocolError) as caught:
        await bridge.fulfil(call({}, era=HANDSHAKE, ask=ask, client_capabilities=ELICIT), {"inputRequests": requests})
    assert caught.value.code == code


async def test_a_client_that_does_not_read_its_stream_loses_its_calls_notifications_after_one_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge, "NOTIFY_DEADLINE", 0.01)
    attempts: list[Message] = []

    async def stuck(message: Message) -> None:
        attempts.append(message)
        await anyio.sleep_forever()

    sink = bridge.CallSink(call({}, era=HANDSHAKE, emit=stuck))
    note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    with anyio.fail_after(WAIT):
        for _ in range(3):
            await sink.notify(note)
    assert len(attempts) == 1


# -- a 2026-07-28 upstream -----------------------------------------------------------------------


def modern_servers() -> dict[str, ScriptedServer]:
    return {"files": ScriptedServer(RICH_TOOLS, modern=True)}


async def test_a_modern_upstreams_state_reaches_the_client_sealed_and_comes_back_to_it_unsealed() -> None:
    async with hotpath(modern_servers()) as gw:
        first = await gw.router.handle(
            call({"name": "files__round_trip", "arguments": {}}, era=MODERN, client_capabilities=ELICIT)
        )
        assert first["resultType"] == "input_required"
        assert first["requestState"].startswith(bridge.SEALED_PREFIX) and UPSTREAM_STATE not in first["requestState"]
        final = await resume(gw, first["requestState"], {"name": ACCEPT}, name="files__round_trip")
        assert final["content"][0]["text"] == "hello Ada"
        retried = gw.servers["files"].calls()[-1]["params"]
        assert retried["requestState"] == UPSTREAM_STATE and retried["inputResponses"] == {"name": ACCEPT}
        legs = gw.audit.decisions()
        assert len(legs) == 2 and legs[0]["call_id"] == legs[1]["call_id"]


@pytest.mark.parametrize("tamper", ["another principal", "changed state"])
async def test_a_sealed_state_replayed_by_someone_else_or_altered_never_reaches_the_upstream(tamper: str) -> None:
    async with hotpath(modern_servers()) as gw:
        first = await gw.router.handle(
            call({"name": "files__round_trip", "arguments": {}}, era=MODERN, client_capabilities=ELICIT)
        )
        state, who = first["requestState"], LOCAL
        if tamper == "another principal":
            who = INTRUDER
        else:
            state = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
        with pytest.raises(ProtocolError) as caught:
            await resume(gw, state, {"name": ACCEPT}, who=who, name="files__round_trip")
        assert caught.value.code == INVALID_PARAMS
        assert len(gw.servers["files"].calls()) == 1


async def test_a_handshake_client_answers_a_modern_upstreams_input_requests_and_the_gateway_retries_for_it() -> None:
    async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        return ACCEPT

    async with hotpath(modern_servers()) as gw:
        result = await gw.router.handle(
            call({"name": "files__round_trip", "arguments": {}}, era=HANDSHAKE, ask=ask, client_capabilities=ELICIT)
        )
        assert result["content"][0]["text"] == "hello Ada"
        assert len(gw.servers["files"].calls()) == 2
