"""The router over in-process upstreams: what a client sees listed, what reaches an upstream,
what is decided and audited first, and how results are shaped for each protocol era."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mcp_gateway.errors import GATEWAY_DENIED, UPSTREAM_UNAVAILABLE, Denied, GatewayError, ProtocolError
from mcp_gateway.identity import LOCAL
from mcp_gateway.jsonrpc import Message
from mcp_gateway.policy_model import KillSwitch, Rule
from mcp_gateway.protocol import INVALID_PARAMS, METHOD_NOT_FOUND
from mcp_gateway.proxy.listen import Listener
from mcp_gateway.proxy.session import Call, Session

from .fakes import ALLOW_LOCAL, HANDSHAKE, MODERN, RICH_TOOLS, WAIT, Hotpath, ScriptedServer, hotpath

pytestmark = pytest.mark.anyio

DENY_SLOW = (*ALLOW_LOCAL, Rule(id="no-slow", team="local", effect="deny", servers=("files",), tools=("slow",)))


def rich() -> dict[str, ScriptedServer]:
    return {"files": ScriptedServer(RICH_TOOLS)}


def call(
    method: str, params: dict[str, Any], *, era: str = HANDSHAKE, session: Session | None = None, **fields: Any
) -> Call:
    if session is None:
        session = Session(LOCAL, protocol_version=era, ephemeral=era == MODERN)
    return Call(session, 1, method, params, protocol_version=era, **fields)


async def tool(gw: Hotpath, name: str, arguments: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return await gw.router.handle(call("tools/call", {"name": name, "arguments": arguments or {}}, **kw))


async def test_a_client_sees_each_upstreams_tools_under_its_namespace() -> None:
    async with hotpath({"files": ScriptedServer(), "notes": ScriptedServer()}) as gw:
        listed = await gw.router.handle(call("tools/list", {}))
        assert sorted(t["name"] for t in listed["tools"]) == ["files__echo", "notes__echo"]
        assert listed["tools"][0]["inputSchema"]["required"] == ["text"]


async def test_a_tool_the_principal_may_not_call_is_not_listed() -> None:
    async with hotpath(rich(), rules=DENY_SLOW) as gw:
        names = {t["name"] for t in (await gw.router.handle(call("tools/list", {})))["tools"]}
        assert "files__slow" not in names and "files__echo" in names


async def test_a_call_reaches_the_upstream_under_its_own_name_after_its_decision_is_on_record() -> None:
    async with hotpath() as gw:
        result = await tool(gw, "files__echo", {"text": "hi"})
        assert result == {"content": [{"type": "text", "text": "hi"}]}
        [received] = gw.servers["files"].calls()
        assert received["params"]["name"] == "echo" and received["params"]["arguments"] == {"text": "hi"}
        [decision] = gw.audit.decisions()
        assert (decision["server"], decision["tool"], decision["decision"]) == ("files", "echo", "allow")


async def test_a_denied_call_never_reaches_the_upstream_and_says_which_rule_denied_it() -> None:
    async with hotpath(rich(), rules=DENY_SLOW) as gw:
        with pytest.raises(Denied) as caught:
            await tool(gw, "files__slow")
        assert caught.value.code == GATEWAY_DENIED and caught.value.data["rule_id"] == "no-slow"  # type: ignore[index]
        assert gw.servers["files"].calls() == []
        assert [d["decision"] for d in gw.audit.decisions()] == ["deny"]


async def test_an_unknown_tool_is_refused_and_the_probe_is_on_record() -> None:
    async with hotpath() as gw:
        with pytest.raises(ProtocolError) as caught:
            await tool(gw, "files__nope")
        assert caught.value.code == INVALID_PARAMS and "Unknown tool: files__nope" in caught.value.message
        assert [d["tool"] for d in gw.audit.decisions()] == ["files__nope"]


async def test_arguments_that_do_not_fit_the_schema_are_a_tool_error_the_model_can_read_and_are_not_forwarded() -> None:
    async with hotpath() as gw:
        result = await tool(gw, "files__echo", {"text": 5})
        assert result["isError"] is True and "Invalid arguments for files__echo" in result["content"][0]["text"]
        assert gw.servers["files"].calls() == []
        assert len(gw.audit.decisions()) == 1


async def test_a_modern_client_gets_a_complete_result_stamped_with_the_gateways_identity() -> None:
    async with hotpath() as gw:
        result = await tool(gw, "files__echo", {"text": "hi"}, era=MODERN)
        assert result["resultType"] == "complete"
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-gateway"
        listed = await gw.router.handle(call("tools/list", {}, era=MODERN))
        assert listed["cacheScope"] == "private"  # what one caller sees is not another's
        assert "resultType" not in await tool(gw, "files__echo", {"text": "hi"})


@pytest.mark.parametrize(("method", "era"), [("initialize", MODERN), ("ping", MODERN), ("server/discover", HANDSHAKE)])
async def test_a_method_of_the_other_era_is_not_found(method: str, era: str) -> None:
    async with hotpath() as gw:
        with pytest.raises(ProtocolError) as caught:
            await gw.router.handle(call(method, {}, era=era))
        assert caught.value.code == METHOD_NOT_FOUND


async def test_initialize_settles_on_a_revision_the_gateway_speaks() -> None:
    async with hotpath() as gw:
        session = Session(LOCAL)
        old = await gw.router.handle(call("initialize", {"protocolVersion": "2025-03-26"}, session=session))
        assert old["protocolVersion"] == session.protocol_version == "2025-03-26"
        unknown = await gw.router.handle(call("initialize", {"protocolVersion": "1999-01-01"}, session=Session(LOCAL)))
        assert unknown["protocolVersion"] == HANDSHAKE


async def test_set_level_refuses_a_level_that_does_not_exist() -> None:
    async with hotpath() as gw:
        session = Session(LOCAL, protocol_version=HANDSHAKE)
        with pytest.raises(ProtocolError) as caught:
            await gw.router.handle(call("logging/setLevel", {"level": "loud"}, session=session))
        assert caught.value.code == INVALID_PARAMS and session.log_level is None
        await gw.router.handle(call("logging/setLevel", {"level": "error"}, session=session))
        assert session.log_level == "error"


async def test_progress_reaches_the_caller_under_the_token_it_chose() -> None:
    async with hotpath(rich()) as gw:
        emitted: list[Message] = []

        async def emit(message: Message) -> None:
            emitted.append(message)

        params = {"name": "files__progress", "arguments": {}, "_meta": {"progressToken": "mine"}}
        await gw.router.handle(call("tools/call", params, emit=emit))
        assert [m["params"]["progressToken"] for m in emitted] == ["mine"]
        assert gw.servers["files"].calls()[0]["params"]["_meta"]["progressToken"] != "mine"


async def test_log_messages_reach_a_caller_only_at_or_above_its_level() -> None:
    async with hotpath(rich()) as gw:
        emitted: list[Message] = []

        async def emit(message: Message) -> None:
            emitted.append(message)

        await tool(gw, "files__log", {"level": "info"}, emit=emit, log_level="warning")
        await tool(gw, "files__log", {"level": "error"}, emit=emit, log_level="warning")
        await tool(gw, "files__log", {"level": "error"}, emit=emit, era=MODERN)  # asked for no logs
        assert [m["params"]["level"] for m in emitted] == ["error"]


async def test_engaging_a_switch_ends_a_call_in_flight_with_the_kill_error_and_cancels_it_upstream() -> None:
    async with hotpath(rich()) as gw:
        outcome: list[BaseException] = []

        async def run() -> None:
            try:
                await tool(gw, "files__slow")
            except GatewayError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(WAIT):
                while not gw.servers["files"].calls():
                    await anyio.sleep(0.01)
            switch = KillSwitch("ks1", "tool", "files/slow", "incident", "ops", 0.0)
            assert gw.governance.inflight.kill([switch]) == 1
        [error] = outcome
        assert isinstance(error, Denied) and error.data["kill_switch_id"] == "ks1"  # type: ignore[index]
        request_id = gw.servers["files"].calls()[0]["id"]
        with anyio.fail_after(WAIT):
            while request_id not in gw.servers["files"].cancelled:
                await anyio.sleep(0.01)
        with anyio.fail_after(WAIT):
            while not [r for r in gw.audit.rows if r["kind"] != "decision"]:
                await anyio.sleep(0.01)
        assert [r["outcome"] for r in gw.audit.rows if r["kind"] != "decision"] == ["killed"]


async def test_a_new_tool_upstream_is_announced_to_connected_sessions_and_becomes_callable() -> None:
    server = ScriptedServer()
    async with hotpath({"files": server}) as gw:
        session = Session(LOCAL, protocol_version=HANDSHAKE)
        heard: list[Message] = []
        announced = anyio.Event()

        async def outbox(message: Message) -> None:
            heard.append(message)
            announced.set()

        session.outbox = outbox
        gw.router.open_session(session)
        server.tools["shout"] = RICH_TOOLS["log"]
        await server.deliver({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, None)
        with anyio.fail_after(WAIT):
            await announced.wait()
        assert heard == [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}]
        assert (await tool(gw, "files__shout"))["content"][0]["text"] == "logged"


async def test_an_upstream_that_hangs_up_fails_its_calls_at_once_and_its_tools_leave_until_it_is_back() -> None:
    server = ScriptedServer(RICH_TOOLS)
    async with hotpath({"files": server}) as gw:
        failures: list[GatewayError] = []

        async def run() -> None:
            try:
                await tool(gw, "files__slow")
            except GatewayError as exc:
                failures.append(exc)

        upstream = gw.router.upstreams["files"]
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(WAIT):
                while not server.calls():
                    await anyio.sleep(0.01)
            server.hang_up()
        [error] = failures
        assert error.code == UPSTREAM_UNAVAILABLE and "hung up" in error.message
        assert upstream.state == "down"
        assert (await gw.router.handle(call("tools/list", {})))["tools"] == []
        with anyio.fail_after(WAIT):
            await upstream.ready.wait()  # the supervisor reconnects
        assert (await tool(gw, "files__echo", {"text": "back"}))["content"][0]["text"] == "back"


async def test_a_listen_stream_that_falls_behind_is_ended_rather_than_waited_for() -> None:
    send, receive = anyio.create_memory_object_stream[Message](1)
    ended: list[bool] = []
    listener = Listener(LOCAL, {"toolsListChanged": True}, send, subscription_id="s1")
    listener.on_end = lambda: ended.append(True)
    note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    with receive:
        assert listener.deliver(note) is True
        assert listener.deliver(note) is False
        assert ended == [True]
        assert receive.receive_nowait()["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "s1"
