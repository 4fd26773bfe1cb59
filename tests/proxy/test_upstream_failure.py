"""What a client sees when an upstream fails: a process dies mid-call, a URL stops
answering, an upstream is down from the start, a call runs past its timeout, the client
gives up on a call. Real parts throughout: the everything server as a stdio child of the
gateway (`local`) and as a Streamable HTTP subprocess the test kills and restarts
(`remote`), the gateway under uvicorn, SDK clients.

Waits are bounded and then asserted, so a broken behaviour fails fast with what was seen
instead of hanging: `with anyio.move_on_after(N): await <condition>` then `assert`."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.shared.exceptions import MCPError
from mcp.types import ToolListChangedNotification

from mcp_gateway.errors import UPSTREAM_TIMEOUT, UPSTREAM_UNAVAILABLE
from mcp_gateway.protocol import INVALID_PARAMS
from mcp_gateway.proxy import stdio_client
from mcp_gateway.runtime import Gateway

from ..support import (
    UpstreamProcess,
    free_port,
    http_upstream,
    raw_client,
    serve,
    stdio_upstream,
    wait_ready,
    write_config,
)

pytestmark = pytest.mark.anyio

MODES = ["legacy", "2026-07-28"]
UPSTREAMS = ["local", "remote"]
CANCELLED = "cancelled slow"
# The supervisor's backoff tops out at 30 s between attempts: allow one full gap and then some.
RECONNECT_DEADLINE = 45.0


# -- the rig -------------------------------------------------------------------------------


@dataclass
class Rig:
    """The gateway with both upstreams behind it, and the files where each records cancellations."""

    url: str
    gateway: Gateway
    remote: UpstreamProcess
    cancel_logs: dict[str, Path]

    def cancellations(self, upstream: str) -> list[str]:
        path = self.cancel_logs[upstream]
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def local_pid(self) -> int:
        # No public accessor for the stdio child (see the report): reach into the live transport.
        return int(self.gateway.upstreams["local"]._transport.process.pid)


@asynccontextmanager
async def rig(directory: Path, **per_upstream: Any) -> AsyncIterator[Rig]:
    """Start `remote`, then the gateway with `local` (which it spawns) and `remote` behind it."""
    logs = {name: directory / f"{name}-cancelled.log" for name in UPSTREAMS}
    remote = UpstreamProcess(env={"EVERYTHING_CANCEL_LOG": str(logs["remote"])})
    await remote.start()
    try:
        local = stdio_upstream(env={"EVERYTHING_CANCEL_LOG": str(logs["local"])}, **per_upstream)
        remote_config = http_upstream(remote.url, **per_upstream)
        config = write_config(directory, {"local": local, "remote": remote_config})
        async with serve(config) as (url, gateway):
            await wait_ready(gateway)
            yield Rig(url, gateway, remote, logs)
    finally:
        remote.kill()


# -- waiting -------------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds; the caller bounds the wait. Only for state that lives in
    another process (a file, `/readyz`, a listing) and cannot signal this one."""
    while not await check():
        await anyio.sleep(0.05)


class ListChanged:
    """A `message_handler` that counts `notifications/tools/list_changed`."""

    def __init__(self) -> None:
        self.count = 0
        self._arrived = anyio.Event()

    async def __call__(self, message: IncomingMessage) -> None:
        if isinstance(message, ToolListChangedNotification):
            self.count += 1
            self._arrived.set()
            self._arrived = anyio.Event()

    async def beyond(self, count: int) -> None:
        """Wait until more than `count` have arrived."""
        while self.count <= count:
            await self._arrived.wait()


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


def has_tools_of(prefix: str, names: set[str]) -> bool:
    return any(name.startswith(prefix) for name in names)


async def wait_for_tools(client: Client, prefix: str, *, listed: bool) -> None:
    async def settled() -> bool:
        return has_tools_of(prefix, await tool_names(client)) == listed

    await until(settled)


async def upstream_status(url: str, name: str) -> dict[str, Any]:
    """Upstream `name` as the gateway's `/readyz` reports it."""
    async with raw_client(url) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    statuses: dict[str, dict[str, Any]] = {u["name"]: u for u in response.json()["upstreams"]}
    return statuses[name]


async def wait_for_state(url: str, name: str, state: str) -> None:
    async def reached() -> bool:
        return bool((await upstream_status(url, name))["state"] == state)

    await until(reached)


async def wait_for_cancellation(rig: Rig, upstream: str) -> None:
    async def logged() -> bool:
        return CANCELLED in rig.cancellations(upstream)

    await until(logged)


def assert_names_a_connection_failure(last_error: str | None) -> None:
    # What an operator reads on /readyz: the cause, not a wrapper around it.
    assert last_error and "connect" in last_error.lower(), f"last_error does not say why: {last_error!r}"


async def call_slow_until_interrupted(client: Client, tool: str, interrupt: Callable[[], object]) -> MCPError:
    """Call `tool` (a 30 s `slow`), run `interrupt` once the upstream is working on it (its
    first progress report) and return the error the call ends with, which must come promptly."""
    working = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        working.set()

    async def interrupt_when_working() -> None:
        await working.wait()
        interrupt()

    async with anyio.create_task_group() as tg:
        tg.start_soon(interrupt_when_working)
        with pytest.raises(MCPError) as info, anyio.fail_after(10):
            await client.call_tool(tool, {"seconds": 30}, progress_callback=on_progress)
        tg.cancel_scope.cancel()
    return info.value


# -- the tests -----------------------------------------------------------------------------


async def test_killed_stdio_upstream_fails_its_call_leaves_the_catalog_and_is_respawned(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        changes = ListChanged()
        async with Client(r.url, mode="legacy", message_handler=changes) as client:
            assert {"local__slow", "remote__echo"} <= await tool_names(client)
            pid, seen = r.local_pid(), changes.count

            kill = partial(os.kill, pid, signal.SIGKILL)
            error = await call_slow_until_interrupted(client, "local__slow", kill)
            assert error.code == UPSTREAM_UNAVAILABLE
            assert "'local'" in error.message

            # The other upstream does not notice.
            remote = await client.call_tool("remote__echo", {"text": "still here"})
            assert remote.structured_content == {"text": "still here"}

            with anyio.move_on_after(10):
                await changes.beyond(seen)
            assert changes.count > seen, "no tools/list_changed after the upstream died"
            # The respawn waits out a backoff and a fresh interpreter's start: ample time to look.
            assert not has_tools_of("local__", await tool_names(client))

            with anyio.move_on_after(RECONNECT_DEADLINE):
                await wait_for_tools(client, "local__", listed=True)
            assert has_tools_of("local__", await tool_names(client)), await upstream_status(r.url, "local")
            assert changes.count >= seen + 2, "expected list_changed once down and once back"
            assert r.local_pid() != pid
            local = await client.call_tool("local__add", {"a": 1, "b": 2})
            assert local.structured_content == {"result": 3}


async def test_killed_http_upstream_fails_its_call_shows_down_and_returns_when_restarted(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        changes = ListChanged()
        async with Client(r.url, mode="legacy", message_handler=changes) as client:
            seen = changes.count

            error = await call_slow_until_interrupted(client, "remote__slow", r.remote.kill)
            assert error.code == UPSTREAM_UNAVAILABLE
            assert "'remote'" in error.message

            local = await client.call_tool("local__echo", {"text": "still here"})
            assert local.structured_content == {"text": "still here"}

            # Nothing else is asked of `remote` meanwhile: the gateway must notice on its own.
            with anyio.move_on_after(10):
                await wait_for_state(r.url, "remote", "down")
            status = await upstream_status(r.url, "remote")
            assert status["state"] == "down", status
            assert_names_a_connection_failure(status["last_error"])
            with anyio.move_on_after(5):
                await changes.beyond(seen)
            assert changes.count > seen, "no tools/list_changed after the upstream died"
            assert not has_tools_of("remote__", await tool_names(client))

            await r.remote.start()  # on the same port
            with anyio.move_on_after(RECONNECT_DEADLINE):
                await wait_for_tools(client, "remote__", listed=True)
            status = await upstream_status(r.url, "remote")
            assert status["state"] == "ready", status
            remote = await client.call_tool("remote__add", {"a": 2, "b": 2})
            assert remote.structured_content == {"result": 4}


async def test_hung_http_upstream_is_given_up_by_its_health_check_and_its_call_ends_then(
    tmp_path: Path,
) -> None:
    # The process is stopped, not killed: its socket still accepts, nothing ever answers,
    # and the call's own timeout (300 s) is far off. The health check must end it.
    async with rig(tmp_path, health_interval=0.5, health_timeout=1) as r:
        assert r.remote.process is not None
        pid = r.remote.process.pid
        try:
            async with Client(r.url, mode="legacy") as client:
                error = await call_slow_until_interrupted(client, "remote__slow", partial(os.kill, pid, signal.SIGSTOP))
                assert error.code == UPSTREAM_UNAVAILABLE
                assert "health check failed" in error.message, error.message
                local = await client.call_tool("local__echo", {"text": "still here"})
                assert local.structured_content == {"text": "still here"}
        finally:
            os.kill(pid, signal.SIGCONT)


async def test_upstream_down_from_the_start_does_not_stop_the_gateway_and_its_tools_are_unknown(
    tmp_path: Path,
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/mcp"
    config = write_config(tmp_path, {"local": stdio_upstream(), "ghost": http_upstream(nobody)})
    async with serve(config) as (url, gateway):
        with anyio.fail_after(30):
            await gateway.upstreams["local"].ready.wait()
        with anyio.move_on_after(10):
            await wait_for_state(url, "ghost", "down")
        status = await upstream_status(url, "ghost")
        assert status["state"] == "down", status
        assert_names_a_connection_failure(status["last_error"])

        async with Client(url, mode="legacy") as client:
            names = await tool_names(client)
            assert "local__echo" in names
            assert not has_tools_of("ghost__", names)
            local = await client.call_tool("local__echo", {"text": "served"})
            assert local.structured_content == {"text": "served"}
            with pytest.raises(MCPError) as info, anyio.fail_after(5):
                await client.call_tool("ghost__echo", {"text": "anyone?"})
    assert info.value.code == INVALID_PARAMS


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_call_past_the_upstream_timeout_errors_and_the_upstream_sees_the_cancellation(
    tmp_path: Path, upstream: str
) -> None:
    async with rig(tmp_path, timeout=1) as r, Client(r.url, mode="legacy") as client:
        with pytest.raises(MCPError) as info, anyio.fail_after(10):
            await client.call_tool(f"{upstream}__slow", {"seconds": 30})
        assert info.value.code == UPSTREAM_TIMEOUT
        assert f"'{upstream}'" in info.value.message
        with anyio.move_on_after(10):
            await wait_for_cancellation(r, upstream)
        assert CANCELLED in r.cancellations(upstream)


@pytest.mark.parametrize("upstream", UPSTREAMS)
@pytest.mark.parametrize("mode", MODES)
async def test_client_cancelling_a_call_cancels_it_upstream(tmp_path: Path, mode: str, upstream: str) -> None:
    async with rig(tmp_path) as r, Client(r.url, mode=mode) as client:
        working = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            working.set()

        async def call() -> None:
            await client.call_tool(f"{upstream}__slow", {"seconds": 30}, progress_callback=on_progress)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await working.wait()
                tg.cancel_scope.cancel()
        with anyio.move_on_after(10):
            await wait_for_cancellation(r, upstream)
        assert CANCELLED in r.cancellations(upstream)
        # The client's connection is still good for the next call.
        echoed = await client.call_tool(f"{upstream}__echo", {"text": "after"})
        assert echoed.structured_content == {"text": "after"}


async def test_hung_stdio_upstream_is_given_up_by_its_health_check_and_replaced_by_a_new_child(
    tmp_path: Path,
) -> None:
    # A stopped child keeps its pipes open and never exits: only asking it finds it out.
    async with rig(tmp_path, health_interval=0.5, health_timeout=1) as r:
        pid = r.local_pid()
        try:
            async with Client(r.url, mode="legacy") as client:
                error = await call_slow_until_interrupted(client, "local__slow", partial(os.kill, pid, signal.SIGSTOP))
                assert error.code == UPSTREAM_UNAVAILABLE
                assert "health check failed" in error.message, error.message
                remote = await client.call_tool("remote__echo", {"text": "still here"})
                assert remote.structured_content == {"text": "still here"}
                with anyio.move_on_after(RECONNECT_DEADLINE):
                    await wait_for_tools(client, "local__", listed=True)
                assert r.local_pid() != pid, "the stopped child was not replaced"
                local = await client.call_tool("local__add", {"a": 1, "b": 2})
                assert local.structured_content == {"result": 3}
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


async def test_stdio_upstream_whose_stdout_line_is_too_long_goes_down_fails_fast_and_is_respawned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limit is 64 MiB; a smaller one here makes the same path cheap to reach.
    monkeypatch.setattr(stdio_client, "MAX_LINE", 64 * 1024)
    async with rig(tmp_path) as r:
        pid = r.local_pid()
        async with Client(r.url, mode="legacy") as client:
            with pytest.raises(MCPError) as info, anyio.fail_after(10):
                await client.call_tool("local__echo", {"text": "x" * 100_000})
            assert info.value.code == UPSTREAM_UNAVAILABLE, info.value
            with anyio.move_on_after(RECONNECT_DEADLINE):
                await wait_for_tools(client, "local__", listed=True)
            assert r.local_pid() != pid, "the child whose output was given up on was not replaced"
            local = await client.call_tool("local__echo", {"text": "short"})
            assert local.structured_content == {"text": "short"}
            assert r.gateway.upstreams["local"].restarts >= 1
