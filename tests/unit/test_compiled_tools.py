"""A tool's input schema is compiled once, when its upstream lists it, and carried on its
catalog entry: calls take the argument check and the `Mcp-Param-*` headers from there."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from mcp.shared.inbound import mcp_param_headers, x_mcp_header_map

from mcp_gateway.config import HttpUpstream
from mcp_gateway.proxy.schemas import CompiledTool
from mcp_gateway.proxy.upstream import Events, Upstream, UpstreamCatalog

from .fakes import WAIT, CatalogApplied, ScriptedServer, hotpath, modern_post, tool_call

pytestmark = pytest.mark.anyio

REGION_TOOL = {
    "name": "deploy",
    "inputSchema": {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "target": {"type": "object", "properties": {"zone": {"type": "string", "x-mcp-header": "Zone"}}},
            "count": {"type": "integer"},
        },
        "required": ["region"],
    },
}
INVALID_TOOL = {"name": "broken", "inputSchema": {"type": "object", "properties": {"x": {"type": 12}}}}


async def _deploy(arguments: dict[str, Any], peer: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": "deployed"}]}


async def test_a_tool_is_compiled_when_its_upstream_lists_it_and_not_again_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled: list[str] = []
    compile_one = CompiledTool.compile.__func__  # type: ignore[attr-defined]

    def counting(cls: type[CompiledTool], tool: dict[str, Any], **options: Any) -> CompiledTool:
        compiled.append(tool["name"])
        return compile_one(cls, tool, **options)  # type: ignore[no-any-return]

    monkeypatch.setattr(CompiledTool, "compile", classmethod(counting))
    server = ScriptedServer({"deploy": _deploy}, schemas=[REGION_TOOL])
    async with hotpath({"files": server}) as gw:
        assert sorted(compiled) == ["deploy", "echo"]
        entry = gw.router.catalog.tool("files__deploy")
        assert entry is not None
        for _ in range(3):
            result = await gw.router.handle(tool_call("files__deploy", {"region": "eu"}))
            assert result["content"][0]["text"] == "deployed"
            refused = await gw.router.handle(tool_call("files__deploy", {"region": 7}))
            assert refused["isError"] is True
        assert sorted(compiled) == ["deploy", "echo"]
        assert gw.router.catalog.tool("files__deploy") is entry

        upstream = gw.router.upstreams["files"]
        spy = CatalogApplied(gw.router)
        upstream.events = spy
        await server.deliver({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, None)
        with anyio.fail_after(WAIT):
            await spy.applied.wait()
        # Listed again unchanged: nothing is compiled again.
        assert sorted(compiled) == ["deploy", "echo"]
        again = gw.router.catalog.tool("files__deploy")
        assert again is not None and again.tool is entry.tool

        # Its schema changed: that tool alone is compiled again, and its check follows.
        server.schemas["deploy"] = {**REGION_TOOL, "inputSchema": {"type": "object", "required": ["zone"]}}
        spy.applied = anyio.Event()
        await server.deliver({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, None)
        with anyio.fail_after(WAIT):
            await spy.applied.wait()
        assert sorted(compiled) == ["deploy", "deploy", "echo"]
        changed = gw.router.catalog.tool("files__deploy")
        assert changed is not None and changed.tool is upstream.catalog.compiled["deploy"] is not entry.tool
        refused = await gw.router.handle(tool_call("files__deploy", {"region": "eu"}))
        assert refused["isError"] is True and "zone" in refused["content"][0]["text"]


async def test_a_tool_with_an_invalid_schema_is_listed_called_unchecked_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "mcp_gateway.proxy.upstream")
    server = ScriptedServer({"broken": _deploy}, schemas=[INVALID_TOOL])
    async with hotpath({"files": server}) as gw:
        assert "files__broken" in [t["name"] for t in gw.router.catalog.snapshot.listing("tools")]
        for arguments in ({"x": "anything"}, {"x": 1}, {}):
            result = await gw.router.handle(tool_call("files__broken", arguments))
            assert result["content"][0]["text"] == "deployed"
        assert len(server.calls()) == 3
    warnings = [r.getMessage() for r in caplog.records if "invalid input schema" in r.getMessage()]
    assert warnings == [
        "files: tool 'broken' has an invalid input schema; arguments are not checked: 12 is not valid under any of"
        " the given schemas"
    ]


def test_a_compiled_tool_maps_its_annotated_arguments_to_headers_as_the_sdk_does() -> None:
    tool = CompiledTool.compile(REGION_TOOL)
    schema = REGION_TOOL["inputSchema"]
    assert tool.annotated
    assert tool.header_map == x_mcp_header_map(schema) == {("region",): "Region", ("target", "zone"): "Zone"}
    arguments = {"region": "eu-west", "target": {"zone": "b"}, "count": 2}
    assert tool.param_headers(arguments) == mcp_param_headers(tool.header_map, arguments)
    assert tool.param_headers(arguments) == {"Mcp-Param-Region": "eu-west", "Mcp-Param-Zone": "b"}
    assert tool.param_headers("not an object") == {}


def test_a_schema_that_annotates_invalidly_or_not_at_all_mirrors_nothing() -> None:
    bad = {"name": "t", "inputSchema": {"type": "object", "properties": {"n": {"type": "object", "x-mcp-header": "N"}}}}
    assert CompiledTool.compile(bad).header_map == {}
    assert CompiledTool.compile(bad).annotated
    plain = CompiledTool.compile({"name": "p", "inputSchema": {"type": "object"}})
    assert plain.header_map == {} and not plain.annotated
    assert CompiledTool.compile({"name": "none"}).validator is None


def test_an_upstream_sends_the_param_headers_of_the_tool_it_listed() -> None:
    upstream = Upstream("api", HttpUpstream(url="http://127.0.0.1:9/mcp", protocol="modern"), Events())
    upstream.catalog = UpstreamCatalog(tools=[REGION_TOOL])
    params = {"name": "deploy", "arguments": {"region": "eu", "target": {"zone": "a"}}}
    assert upstream._headers("tools/call", params) == {
        "mcp-method": "tools/call",
        "mcp-name": "deploy",
        "Mcp-Param-Region": "eu",
        "Mcp-Param-Zone": "a",
    }
    assert upstream._headers("tools/call", {"name": "unlisted", "arguments": {"region": "eu"}}) == {
        "mcp-method": "tools/call",
        "mcp-name": "unlisted",
    }


async def test_param_headers_that_disagree_with_the_arguments_are_refused_before_the_call() -> None:
    server = ScriptedServer({"deploy": _deploy}, schemas=[REGION_TOOL])
    async with hotpath({"files": server}) as gw, gw.client() as http:
        arguments = {"region": "eu", "target": {"zone": "a"}}
        body, headers = modern_post("tools/call", {"name": "files__deploy", "arguments": arguments})
        agreeing = {**headers, "mcp-param-region": "eu", "mcp-param-zone": "a"}
        assert (await http.post("/mcp", json=body, headers=agreeing)).status_code == 200
        disagreeing = {**headers, "mcp-param-region": "us", "mcp-param-zone": "a"}
        response = await http.post("/mcp", json=body, headers=disagreeing)
        assert response.status_code == 400 and response.json()["error"]["code"] == -32020
        missing = await http.post("/mcp", json=body, headers=headers)
        assert missing.status_code == 400
        assert len(server.calls()) == 1
