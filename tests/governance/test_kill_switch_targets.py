"""A kill switch must stop something: engaging one on a server or tool this gateway does
not have is refused (422) naming what it has, unless the request says it means a name
not yet configured. The CLI's `kill` says the same in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from ..cli.common import error_lines
from ..support import ADMIN_TOKEN, admin_client, serve, stdio_upstream, wait_ready, write_config

pytestmark = pytest.mark.anyio


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    config = write_config(tmp_path, {"x": stdio_upstream(), "y": stdio_upstream()}, auth="keys")
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url, config


async def engage(url: str, **switch: Any) -> Any:
    async with admin_client(url) as admin:
        return await admin.post("/kill-switches", json={"reason": "incident 5", **switch})


async def test_a_switch_on_a_server_that_is_not_configured_is_refused_naming_the_servers(gateway: Any) -> None:
    url, _ = gateway
    response = await engage(url, scope="server", server="files")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "unknown_target"
    assert "no upstream named 'files' is configured (configured: x, y)" in error["message"]
    async with admin_client(url) as admin:
        assert (await admin.get("/kill-switches")).json()["items"] == []


async def test_a_switch_on_a_tool_its_server_does_not_offer_is_refused_naming_the_tools(gateway: Any) -> None:
    url, _ = gateway
    response = await engage(url, scope="tool", server="x", tool="ech")
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "upstream 'x' has no tool named 'ech' (did you mean 'echo'?)" in message
    assert "echo" in message.split("its tools: ", 1)[1]
    namespaced = await engage(url, scope="tool", server="x", tool="x__echo")
    assert namespaced.status_code == 422
    assert "name it as its upstream does: 'echo'" in namespaced.json()["error"]["message"]


async def test_a_switch_on_a_configured_server_or_known_tool_is_engaged(gateway: Any) -> None:
    url, _ = gateway
    assert (await engage(url, scope="server", server="y")).status_code == 201
    tool = await engage(url, scope="tool", server="x", tool="echo")
    assert tool.status_code == 201 and "warning" not in tool.json()


async def test_a_switch_said_to_name_a_server_not_yet_configured_is_engaged(gateway: Any) -> None:
    url, _ = gateway
    server = await engage(url, scope="server", server="files", unconfigured=True)
    assert server.status_code == 201, server.text
    tool = await engage(url, scope="tool", server="x", tool="coming_soon", unconfigured=True)
    assert tool.status_code == 201, tool.text
    assert {s["target"] for s in [server.json(), tool.json()]} == {"files", "x/coming_soon"}


def kill(config: Path, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    base = url.rsplit("/mcp", 1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env["MCP_GATEWAY_ADMIN_TOKEN"] = ADMIN_TOKEN
    command = [sys.executable, "-m", "mcp_gateway", "kill", "--config", str(config), "--url", base, *args]
    return subprocess.run(command, capture_output=True, env=env, timeout=60)


async def test_the_cli_kill_command_reports_an_unknown_server_in_one_line(gateway: Any) -> None:
    url, config = gateway
    result = await anyio.to_thread.run_sync(kill, config, url, "--server", "files", "--reason", "incident 5")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "no upstream named 'files' is configured (configured: x, y)" in line
    assert "(422 unknown_target)" in line


async def test_the_cli_kill_command_engages_a_switch_and_with_allow_unknown_an_unconfigured_one(
    gateway: Any,
) -> None:
    url, config = gateway
    known = await anyio.to_thread.run_sync(kill, config, url, "--server", "x", "--tool", "echo", "--reason", "r")
    assert known.returncode == 0, known.stderr
    assert known.stdout.decode().startswith("engaged ks_") and "tool 'x/echo'" in known.stdout.decode()
    unknown = await anyio.to_thread.run_sync(kill, config, url, "--server", "files", "--reason", "r", "--allow-unknown")
    assert unknown.returncode == 0, unknown.stderr
    async with admin_client(url) as admin:
        targets = {s["target"] for s in (await admin.get("/kill-switches")).json()["items"]}
    assert targets == {"x/echo", "files"}
