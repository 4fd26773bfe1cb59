"""What an upstream asks of the client, or tells it, reaches the right client through the
gateway: sampling and elicitation go to the client whose call asked and their answers come
back to the tool; resource updates and tool list changes reach the clients that listen,
under the gateway's names.

Every test runs on both downstream eras against both upstream eras (see `test_fidelity.py`),
so each of the four bridges in `proxy/bridge.py` is crossed: relayed server-to-client
requests, `InputRequiredResult` round trips, and the two translations between them.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.client.subscriptions import ResourceUpdated, Subscription, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    Implementation,
    ResourceUpdatedNotification,
    ServerNotification,
    TextContent,
    ToolListChangedNotification,
)

from . import fidelity_rig
from .fidelity_rig import (
    MODERN,
    MODES,
    NAMESPACES,
    SUBSCRIPTION_ID,
    Deployment,
    Inbox,
    handshake_only_api,
    raw_listen,
    wait_for_session_stream,
)

pytestmark = pytest.mark.anyio

deployment = fidelity_rig.deployment  # the module-scoped fixture: one gateway per upstream era

ADA = '{"username":"ada","email":"ada@example.com"}'
# Long enough for a slow machine, short enough that a lost request fails rather than hangs.
CALL_DEADLINE = 20.0


def _text(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


class Sampler:
    """A client's LLM: answers every sampling request with `reply`, remembering the prompts."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    async def __call__(self, context: ClientRequestContext, params: CreateMessageRequestParams) -> CreateMessageResult:
        content = params.messages[0].content
        self.prompts.append(content.text if isinstance(content, TextContent) else repr(content))
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text=self.reply), model="test")


class User:
    """A client's user: answers every elicitation with `answer`, remembering the questions."""

    def __init__(self, answer: ElicitResult) -> None:
        self.answer = answer
        self.questions: list[str] = []

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.questions.append(params.message)
        return self.answer


@pytest.mark.parametrize("mode", MODES)
async def test_sampling_reaches_the_calling_client_and_its_answer_reaches_the_tool(
    deployment: Deployment, mode: str
) -> None:
    caller, bystander = Sampler("from the caller"), Sampler("from the bystander")
    async with (
        Client(deployment.url, mode=mode, sampling_callback=caller) as client,
        Client(deployment.url, mode=mode, sampling_callback=bystander),
    ):
        for namespace in NAMESPACES:
            with anyio.fail_after(CALL_DEADLINE):
                result = await client.call_tool(f"{namespace}__test_sampling", {"prompt": f"question via {namespace}"})
            assert not result.is_error, result
            assert _text(result) == "LLM response: from the caller"
    assert caller.prompts == ["question via local", "question via remote"]
    assert bystander.prompts == []


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_reaches_the_calling_client_and_its_answer_reaches_the_tool(
    deployment: Deployment, mode: str
) -> None:
    accept = ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})
    caller, bystander = User(accept), User(ElicitResult(action="decline"))
    async with (
        Client(deployment.url, mode=mode, elicitation_callback=caller) as client,
        Client(deployment.url, mode=mode, elicitation_callback=bystander),
    ):
        for namespace in NAMESPACES:
            with anyio.fail_after(CALL_DEADLINE):
                question = {"message": f"who are you, {namespace}?"}
                result = await client.call_tool(f"{namespace}__test_elicitation", question)
            assert not result.is_error, result
            assert _text(result) == f"User response: action=accept, content={ADA}"
    assert caller.questions == ["who are you, local?", "who are you, remote?"]
    assert bystander.questions == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_declined_elicitation_reaches_the_tool_as_declined(deployment: Deployment, mode: str) -> None:
    user = User(ElicitResult(action="decline"))
    async with Client(deployment.url, mode=mode, elicitation_callback=user) as client:
        for namespace in NAMESPACES:
            with anyio.fail_after(CALL_DEADLINE):
                result = await client.call_tool(f"{namespace}__test_elicitation", {"message": "who?"})
            assert _text(result) == "User response: action=decline, content={}"


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_without_elicitation_gets_a_clear_error_not_a_hang(deployment: Deployment, mode: str) -> None:
    async with Client(deployment.url, mode=mode) as client:
        for namespace in NAMESPACES:
            with anyio.fail_after(CALL_DEADLINE), pytest.raises(MCPError) as refused:
                await client.call_tool(f"{namespace}__test_elicitation", {"message": "who?"})
            assert "elicitation" in refused.value.error.message
        # The refusal ended that call only: the client goes on working.
        assert _text(await client.call_tool("local__echo", {"text": "still here"})) == "still here"


async def _next_event(subscription: Subscription) -> Any:
    with anyio.fail_after(10):
        return await subscription.__anext__()


def _is_update(uri: str) -> Any:
    def match(message: ServerNotification) -> bool:
        return isinstance(message, ResourceUpdatedNotification) and message.params.uri == uri

    return match


def _is_tools_changed(message: ServerNotification) -> bool:
    return isinstance(message, ToolListChangedNotification)


@pytest.mark.parametrize("mode", MODES)
async def test_resource_updates_reach_subscribers_under_the_gateways_uri(deployment: Deployment, mode: str) -> None:
    uris = {namespace: f"{namespace}+test://watched-resource" for namespace in NAMESPACES}
    if mode == MODERN:
        async with (
            Client(deployment.url, mode=mode) as client,
            client.listen(resource_subscriptions=list(uris.values())) as subscription,
        ):
            for namespace in NAMESPACES:
                await client.call_tool(f"{namespace}__touch_watched", {})
                assert await _next_event(subscription) == ResourceUpdated(uri=uris[namespace])
        return
    inbox, name = Inbox(), f"subscriber-{uuid.uuid4().hex[:8]}"
    info = Implementation(name=name, version="1")
    async with Client(deployment.url, mode=mode, message_handler=inbox.handler, client_info=info) as client:
        await wait_for_session_stream(deployment.gateway, name)
        for namespace in NAMESPACES:
            with handshake_only_api():
                await client.subscribe_resource(uris[namespace])
            await client.call_tool(f"{namespace}__touch_watched", {})
            await inbox.wait_for(_is_update(uris[namespace]))
    updates = [m for m in inbox.messages if isinstance(m, ResourceUpdatedNotification)]
    assert [m.params.uri for m in updates] == list(uris.values())
    # This client opened no listen stream: the id of the gateway's own upstream stream is not its business.
    assert [(m.params.meta or {}).get(SUBSCRIPTION_ID) for m in updates] == [None] * len(NAMESPACES)


async def test_listen_frames_carry_the_clients_own_subscription_id(deployment: Deployment) -> None:
    """The SDK client files listen events by this id: a frame without it, or with another, is lost."""
    wants = {"toolsListChanged": True, "resourceSubscriptions": ["local+test://watched-resource"]}
    async with (
        raw_listen(deployment.url, "my-listen", wants) as next_frame,
        Client(deployment.url, mode=MODERN) as client,
    ):
        ack = await next_frame()
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["_meta"] == {SUBSCRIPTION_ID: "my-listen"}
        await client.call_tool("local__touch_watched", {})
        update = await next_frame()
        assert update["method"] == "notifications/resources/updated"
        assert update["params"] == {
            "uri": "local+test://watched-resource",
            "_meta": {SUBSCRIPTION_ID: "my-listen"},
        }
        for expected in ("extra added", "extra removed"):
            assert _text(await client.call_tool("remote__toggle_extra_tool", {})) == expected
            changed = await next_frame()
            assert changed["method"] == "notifications/tools/list_changed"
            assert changed.get("params", {}).get("_meta") == {SUBSCRIPTION_ID: "my-listen"}


@pytest.mark.parametrize("mode", MODES)
async def test_upstream_tool_list_changes_reach_clients(deployment: Deployment, mode: str) -> None:
    async def exposed(client: Client) -> set[str]:
        return {tool.name for tool in (await client.list_tools()).tools}

    if mode == MODERN:
        async with (
            Client(deployment.url, mode=mode) as client,
            client.listen(tools_list_changed=True) as subscription,
        ):
            for namespace in NAMESPACES:
                toggle = f"{namespace}__toggle_extra_tool"
                assert _text(await client.call_tool(toggle, {})) == "extra added"
                assert await _next_event(subscription) == ToolsListChanged()
                assert f"{namespace}__extra" in await exposed(client)
                assert _text(await client.call_tool(f"{namespace}__extra", {})) == "extra"
                assert _text(await client.call_tool(toggle, {})) == "extra removed"
                assert await _next_event(subscription) == ToolsListChanged()
                assert f"{namespace}__extra" not in await exposed(client)
        return
    inbox, name = Inbox(), f"lister-{uuid.uuid4().hex[:8]}"
    info = Implementation(name=name, version="1")
    async with Client(deployment.url, mode=mode, message_handler=inbox.handler, client_info=info) as client:
        await wait_for_session_stream(deployment.gateway, name)
        seen = 0
        for namespace in NAMESPACES:
            toggle = f"{namespace}__toggle_extra_tool"
            assert _text(await client.call_tool(toggle, {})) == "extra added"
            seen = len(await inbox.wait_for(_is_tools_changed, count=seen + 1))
            assert f"{namespace}__extra" in await exposed(client)
            assert _text(await client.call_tool(f"{namespace}__extra", {})) == "extra"
            assert _text(await client.call_tool(toggle, {})) == "extra removed"
            seen = len(await inbox.wait_for(_is_tools_changed, count=seen + 1))
            assert f"{namespace}__extra" not in await exposed(client)
