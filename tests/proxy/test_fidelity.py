"""What passes through the gateway arrives as the upstream sent it, renamed into the
gateway's namespace and nothing else: tool results and definitions, listings, progress,
log messages, resource reads, prompts and completions, and the server's identity.

Every test runs on both downstream eras (an SDK client in `legacy` and `2026-07-28` mode)
against both upstream eras (the gateway speaking 2026-07-28 to the everything servers, or
the handshake because the configuration says `protocol: handshake`). Requests, events and
change notifications that go back to the client are in `test_fidelity_interaction.py`.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import LoggingMessageNotificationParams, PromptReference, ResourceTemplateReference
from pydantic import BaseModel

from mcp_gateway.protocol import RESOURCE_NOT_FOUND

from . import fidelity_rig
from .fidelity_rig import (
    MODERN,
    MODES,
    NAMESPACES,
    SERVER_INFO,
    Answer,
    Deployment,
    RawClient,
    handshake_only_api,
    raw_client,
)

pytestmark = pytest.mark.anyio

deployment = fidelity_rig.deployment  # the module-scoped fixture: one gateway per upstream era

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("test_simple_text", {}),
    ("test_image_content", {}),
    ("test_audio_content", {}),
    ("test_embedded_resource", {}),
    ("test_multiple_content_types", {}),
    ("test_error_handling", {}),
    ("echo", {"text": "héllo, wörld"}),
    ("add", {"a": 2, "b": 40}),
]


def _wire(model: BaseModel) -> dict[str, Any]:
    """A result or definition as it travels, minus `_meta` (the identity stamp differs by design)."""
    data = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    data.pop("_meta", None)
    return data


def _as_exposed(result: dict[str, Any], namespace: str) -> dict[str, Any]:
    """What the gateway promises for an upstream's result: embedded resources renamed so
    the client can read them back through the gateway, everything else untouched."""
    content = []
    for block in result.get("content", []):
        if block.get("type") == "resource":
            resource = block["resource"]
            block = {**block, "resource": {**resource, "uri": f"{namespace}+{resource['uri']}"}}
        content.append(block)
    return {**result, "content": content}


@pytest.mark.parametrize("mode", MODES)
async def test_tool_results_keep_content_structured_content_and_error_flag(deployment: Deployment, mode: str) -> None:
    async with (
        Client(deployment.upstream_url, mode=mode) as direct,
        Client(deployment.url, mode=mode) as client,
    ):
        for namespace in NAMESPACES:
            results = {}
            for name, arguments in CALLS:
                expected = await direct.call_tool(name, arguments)
                results[name] = await client.call_tool(f"{namespace}__{name}", arguments)
                assert _wire(results[name]) == _as_exposed(_wire(expected), namespace), name
            mixed = results["test_multiple_content_types"]
            assert [block.type for block in mixed.content] == ["text", "image", "resource"]
            assert results["test_audio_content"].content[0].mime_type == "audio/wav"  # type: ignore[union-attr]
            assert results["test_error_handling"].is_error
            assert results["echo"].structured_content == {"text": "héllo, wörld"}
            assert results["add"].structured_content == {"result": 42}


@pytest.mark.parametrize("mode", MODES)
async def test_tool_definitions_keep_schemas_annotations_and_titles(deployment: Deployment, mode: str) -> None:
    async with (
        Client(deployment.upstream_url, mode=mode) as direct,
        Client(deployment.url, mode=mode) as client,
    ):
        upstream_tools = (await direct.list_tools()).tools
        exposed = {tool.name: tool for tool in (await client.list_tools()).tools}
    for namespace in NAMESPACES:
        for tool in upstream_tools:
            name = f"{namespace}__{tool.name}"
            assert _wire(exposed[name]) == {**_wire(tool), "name": name}
        toggle = exposed[f"{namespace}__toggle_extra_tool"]
        assert toggle.title == "Toggle the extra tool"
        assert toggle.annotations is not None and toggle.annotations.idempotent_hint is False
        assert exposed[f"{namespace}__echo"].output_schema is not None


@pytest.mark.parametrize("mode", MODES)
async def test_prompt_resource_and_template_listings_keep_their_fields(deployment: Deployment, mode: str) -> None:
    async with (
        Client(deployment.upstream_url, mode=mode) as direct,
        Client(deployment.url, mode=mode) as client,
    ):
        upstream = (
            (await direct.list_prompts()).prompts,
            (await direct.list_resources()).resources,
            (await direct.list_resource_templates()).resource_templates,
        )
        prompts = {p.name: _wire(p) for p in (await client.list_prompts()).prompts}
        resources = {r.uri: _wire(r) for r in (await client.list_resources()).resources}
        listed_templates = (await client.list_resource_templates()).resource_templates
        templates = {t.uri_template: _wire(t) for t in listed_templates}
    for namespace in NAMESPACES:
        for prompt in upstream[0]:
            name = f"{namespace}__{prompt.name}"
            assert prompts[name] == {**_wire(prompt), "name": name}
        for resource in upstream[1]:
            uri = f"{namespace}+{resource.uri}"
            assert resources[uri] == {**_wire(resource), "uri": uri}
        for template in upstream[2]:
            uri_template = f"{namespace}+{template.uri_template}"
            assert templates[uri_template] == {**_wire(template), "uriTemplate": uri_template}


class ProgressLog:
    """The progress notifications one call's callback received."""

    def __init__(self, expected: int) -> None:
        self.seen: list[tuple[float, float | None, str | None]] = []
        self.complete = anyio.Event()
        self._expected = expected

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append((progress, total, message))
        if len(self.seen) == self._expected:
            self.complete.set()


@pytest.mark.parametrize("mode", MODES)
async def test_progress_reaches_the_caller_in_order(deployment: Deployment, mode: str) -> None:
    async with Client(deployment.url, mode=mode) as client:
        for namespace in NAMESPACES:
            progress = ProgressLog(expected=3)
            # The SDK hands a progress notification to the callback only if it carries the
            # token of this very request.
            tool = f"{namespace}__test_tool_with_progress"
            result = await client.call_tool(tool, {}, progress_callback=progress)
            assert not result.is_error
            with anyio.fail_after(5):
                await progress.complete.wait()
            assert progress.seen == [(float(n), 100.0, f"Completed step {n} of 100") for n in (0, 50, 100)]


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_callers_each_get_their_own_progress_token_back(deployment: Deployment, mode: str) -> None:
    answers: dict[str, Answer] = {}
    async with raw_client(deployment.url, mode) as first, raw_client(deployment.url, mode) as second:

        async def call(client: RawClient, namespace: str, token: str) -> None:
            params = {"name": f"{namespace}__test_tool_with_progress", "arguments": {}}
            answers[token] = await client.request("tools/call", params, {"progressToken": token})

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for namespace in NAMESPACES:
                    tg.start_soon(call, first, namespace, f"first-{namespace}")
                    tg.start_soon(call, second, namespace, f"second-{namespace}")
    assert len(answers) == 4
    for token, answer in answers.items():
        progress = answer.notifications("notifications/progress")
        assert [p["progressToken"] for p in progress] == [token] * 3
        assert [p["progress"] for p in progress] == [0, 50, 100]
        assert answer.result["content"][0]["text"] == "Tool with progress executed successfully"


@pytest.mark.parametrize("mode", MODES)
async def test_log_messages_of_a_call_reach_the_caller(deployment: Deployment, mode: str) -> None:
    received: list[tuple[str, Any]] = []
    changed = anyio.Event()

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        nonlocal changed
        received.append((params.level, params.data))
        changed.set()
        changed = anyio.Event()

    # At 2026-07-28 logs are a per-request opt-in; before, `logging/setLevel` on the session.
    options: dict[str, Any] = {"log_level": "debug"} if mode == MODERN else {}
    async with Client(deployment.url, mode=mode, logging_callback=on_log, **options) as client:
        if mode != MODERN:
            with handshake_only_api():
                await client.set_logging_level("debug")
        for namespace in NAMESPACES:
            received.clear()
            result = await client.call_tool(f"{namespace}__test_tool_with_logging", {})
            assert result.content[0].text == "Tool with logging executed successfully"  # type: ignore[union-attr]
            with anyio.fail_after(5):
                while len(received) < 3:
                    await changed.wait()
            assert received == [
                ("info", "Tool execution started"),
                ("info", "Tool processing data"),
                ("info", "Tool execution completed"),
            ]


@pytest.mark.parametrize("mode", MODES)
async def test_resource_reads_reach_the_upstream_the_uri_names(deployment: Deployment, mode: str) -> None:
    async with (
        Client(deployment.upstream_url, mode=mode) as direct,
        Client(deployment.url, mode=mode) as client,
    ):
        binary = (await direct.read_resource("test://static-binary")).contents[0]
        for namespace in NAMESPACES:
            text = (await client.read_resource(f"{namespace}+test://static-text")).contents
            assert [(c.uri, c.text) for c in text] == [  # type: ignore[union-attr]
                (f"{namespace}+test://static-text", "This is the content of the static text resource.")
            ]
            blob = (await client.read_resource(f"{namespace}+test://static-binary")).contents[0]
            assert _wire(blob) == {**_wire(binary), "uri": f"{namespace}+test://static-binary"}
            templated = (await client.read_resource(f"{namespace}+test://template/42/data")).contents[0]
            assert templated.uri == f"{namespace}+test://template/42/data"
            assert json.loads(templated.text) == {"id": "42", "templateTest": True, "data": "Data for ID: 42"}  # type: ignore[union-attr]
        with anyio.fail_after(10), pytest.raises(MCPError) as unknown:
            await client.read_resource("elsewhere+test://static-text")
    assert unknown.value.error.code == RESOURCE_NOT_FOUND


@pytest.mark.parametrize("mode", MODES)
async def test_prompts_and_completions_work_under_namespaced_names(deployment: Deployment, mode: str) -> None:
    async with Client(deployment.url, mode=mode) as client:
        for namespace in NAMESPACES:
            prompt_name = f"{namespace}__test_prompt_with_arguments"
            prompt = await client.get_prompt(prompt_name, {"arg1": "one", "arg2": "two"})
            assert [m.content.text for m in prompt.messages] == [  # type: ignore[union-attr]
                "Prompt with arguments: arg1='one', arg2='two'"
            ]
            image = await client.get_prompt(f"{namespace}__test_prompt_with_image")
            assert [m.content.type for m in image.messages] == ["image", "text"]
            by_prompt = await client.complete(
                PromptReference(type="ref/prompt", name=prompt_name), {"name": "arg1", "value": "pa"}
            )
            assert by_prompt.completion.values == ["paris", "park", "party"]
            template = ResourceTemplateReference(type="ref/resource", uri=f"{namespace}+test://template/{{id}}/data")
            by_template = await client.complete(template, {"name": "id", "value": "12"})
            assert by_template.completion.values == ["123"]


@pytest.mark.parametrize("mode", MODES)
async def test_clients_see_the_gateways_identity_never_the_upstreams(deployment: Deployment, mode: str) -> None:
    async with Client(deployment.url, mode=mode) as client:
        results: list[BaseModel] = [
            await client.list_tools(),
            await client.call_tool("remote__echo", {"text": "who"}),
            await client.call_tool("local__echo", {"text": "who"}),
            await client.read_resource("remote+test://static-text"),
            await client.get_prompt("local__test_simple_prompt"),
        ]
        if mode == MODERN:
            # A pinned client never asks `server/discover`: the stamp on each result is all it has.
            stamps = [(getattr(result, "meta", None) or {}).get(SERVER_INFO, {}) for result in results]
            assert [stamp.get("name") for stamp in stamps] == ["mcp-gateway"] * len(results)
            async with Client(deployment.url) as discovering:
                assert discovering.server_info is not None and discovering.server_info.name == "mcp-gateway"
        else:
            assert client.server_info is not None and client.server_info.name == "mcp-gateway"
            assert all(SERVER_INFO not in (getattr(result, "meta", None) or {}) for result in results)


@pytest.mark.parametrize("mode", MODES)
async def test_no_answer_on_the_wire_carries_the_upstreams_identity(deployment: Deployment, mode: str) -> None:
    requests: list[tuple[str, dict[str, Any]]] = [
        ("tools/list", {}),
        ("tools/call", {"name": "remote__echo", "arguments": {"text": "x"}}),
        ("tools/call", {"name": "local__test_tool_with_progress", "arguments": {}}),
        ("resources/read", {"uri": "local+test://template/7/data"}),
        ("prompts/get", {"name": "remote__test_simple_prompt"}),
        ("completion/complete", {"ref": {"type": "ref/prompt", "name": "local__test_prompt_with_arguments"},
                                 "argument": {"name": "arg2", "value": "he"}}),
    ]  # fmt: skip
    async with raw_client(deployment.url, mode) as raw:
        for method, params in requests:
            answer = await raw.request(method, params, {"progressToken": "p"})
            assert "everything-server" not in answer.text, (method, answer.text)
            stamp = answer.result.get("_meta", {}).get(SERVER_INFO)
            if mode == MODERN:
                assert stamp is not None and stamp["name"] == "mcp-gateway", method
            else:
                assert stamp is None, method
