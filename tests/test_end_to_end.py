"""The gateway as agents meet it: real upstream subprocesses (stdio and HTTP), the gateway
under uvicorn, SDK clients on both protocol eras, and `mcp-gateway stdio` as a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from .support import http_upstream, http_upstream_process, serve, stdio_upstream, wait_ready, write_config

pytestmark = pytest.mark.anyio

MODES = ["legacy", "2026-07-28"]


@pytest.fixture
async def two_upstreams(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with http_upstream_process() as remote:
        config = write_config(tmp_path, {"local": stdio_upstream(), "remote": http_upstream(remote.url)})
        async with serve(config) as (url, gateway):
            await wait_ready(gateway)
            yield url, config


@pytest.mark.parametrize("mode", MODES)
async def test_client_lists_and_calls_tools_of_both_upstreams_over_http(two_upstreams, mode: str) -> None:  # type: ignore[no-untyped-def]
    url, _ = two_upstreams
    async with Client(url, mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"local__echo", "remote__echo", "local__add", "remote__add"} <= names
        local = await client.call_tool("local__echo", {"text": "from local"})
        remote = await client.call_tool("remote__add", {"a": 2, "b": 3})
    assert local.content[0].text == "from local"  # type: ignore[union-attr]
    assert local.structured_content == {"text": "from local"}
    assert remote.structured_content == {"result": 5}
    assert not remote.is_error


@pytest.mark.parametrize("mode", MODES)
async def test_client_lists_and_calls_tools_of_both_upstreams_over_stdio(two_upstreams, mode: str) -> None:  # type: ignore[no-untyped-def]
    _, config = two_upstreams
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_gateway", "stdio", "--config", str(config), "--log-level", "warning"]
    )
    async with Client(params, mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"local__echo", "remote__echo"} <= names
        local = await client.call_tool("local__add", {"a": 20, "b": 22})
        remote = await client.call_tool("remote__echo", {"text": "over stdio"})
    assert local.structured_content == {"result": 42}
    assert remote.content[0].text == "over stdio"  # type: ignore[union-attr]
