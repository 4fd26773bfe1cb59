"""Attacks on what stays open (issue 11, breaks 1, 2, 7 and 10): listen streams, GET
streams, resource subscriptions and handshake sessions.

The deployment: the everything server twice, `files` over Streamable HTTP at a handshake
revision (so the gateway subscribes with `resources/subscribe`, and the test can ask the
server itself what is subscribed) and `other` over stdio; team `broad` may use both, team
`narrow` only `other`; API keys on.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client

from mcp_gateway.errors import GATEWAY_DENIED
from mcp_gateway.protocol import INVALID_PARAMS, RESOURCE_NOT_FOUND
from mcp_gateway.runtime import Gateway

from ..support import (
    admin_client,
    create_key,
    http_upstream,
    http_upstream_process,
    serve,
    stdio_upstream,
    wait_ready,
    write_config,
    write_policies,
)

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ADMIN = "streams-test-admin-token"
ADMIN_ENV = "STREAMS_TEST_ADMIN_TOKEN"
WATCHED = "files+test://watched-resource"
POLICY = {
    "teams": {
        "broad": {"rules": [{"id": "broad-all", "allow": {"servers": ["*"]}}]},
        "narrow": {"rules": [{"id": "narrow-other", "allow": {"servers": ["other"]}}]},
    }
}
_ids = count(1)


@dataclass
class Deployment:
    url: str
    gateway: Gateway
    files_url: str
    """The `files` everything server itself."""
    broad: str
    narrow: str
    config: Path

    def admin(self) -> httpx2.AsyncClient:
        return admin_client(self.url, ADMIN)


@pytest.fixture
async def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Deployment]:
    monkeypatch.setenv(ADMIN_ENV, ADMIN)
    async with http_upstream_process() as files:
        write_policies(tmp_path / "policies", POLICY)
        config = write_config(
            tmp_path,
            {"files": http_upstream(files.url, protocol="handshake"), "other": stdio_upstream()},
            auth="keys",
            policies="policies",
            admin_token={"$env": ADMIN_ENV},
        )
        async with serve(config) as (url, gateway):
            await wait_ready(gateway)
            broad = await create_key(url, "broad", "bot", ADMIN)
            narrow = await create_key(url, "narrow", "bot", ADMIN)
            yield Deployment(url, gateway, files.url, broad, narrow, config)


# -- the wire, by hand ---------------------------------------------------------------------------


def _headers(key: str, modern: bool, method: str | None = None, session: str | None = None) -> dict[str, str]:
    headers = {
        "authorization": f"Bearer {key}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": MODERN if modern else HANDSHAKE,
    }
    if method is not None:
        headers["mcp-method"] = method
    if session is not None:
        headers["mcp-session-id"] = session
    return headers


def _modern_body(method: str, params: dict[str, Any]) -> dict[str, Any]:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": {**params, "_meta": meta}}


def _answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether sent as JSON or as an SSE stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        frames = [
            json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]
        return next(f for f in frames if "id" in f and "method" not in f)
    return response.json()  # type: ignore[no-any-return]


@asynccontextmanager
async def listen(
    url: str, key: str, notifications: Any
) -> AsyncIterator[tuple[httpx2.Response, Callable[[], Awaitable[dict[str, Any] | None]]]]:
    """A 2026-07-28 listen stream; yields the response and a function returning its next
    frame, or None once the stream has ended."""
    body = _modern_body("subscriptions/listen", {"notifications": notifications})
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        http.stream("POST", url, content=json.dumps(body), headers=_headers(key, True, "subscriptions/listen")) as r,
    ):
        lines = r.aiter_lines()

        async def next_frame() -> dict[str, Any] | None:
            with anyio.fail_after(20):
                async for line in lines:
                    if line.startswith("data:") and line[5:].strip():  # not a priming event
                        return json.loads(line[5:])  # type: ignore[no-any-return]
            return None

        yield r, next_frame


async def _refused_listen(url: str, key: str, notifications: Any) -> tuple[int, dict[str, Any]]:
    async with listen(url, key, notifications) as (response, _):
        with anyio.fail_after(20, reason="the listen was not refused: its stream stays open"):
            await response.aread()
        return response.status_code, response.json()


class Handshake:
    """A handshake-era session, by hand."""

    def __init__(self, http: httpx2.AsyncClient, url: str, key: str) -> None:
        self.http, self.url, self.key = http, url, key
        self.id: str | None = None

    async def initialize(self) -> httpx2.Response:
        body = {
            "jsonrpc": "2.0",
            "id": next(_ids),
            "method": "initialize",
            "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        }
        response = await self.http.post(self.url, content=json.dumps(body), headers=_headers(self.key, False))
        self.id = response.headers.get("mcp-session-id")
        return response

    async def request(self, method: str, params: dict[str, Any]) -> httpx2.Response:
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
        return await self.http.post(
            self.url, content=json.dumps(body), headers=_headers(self.key, False, session=self.id)
        )


async def _call(url: str, key: str, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    body = _modern_body("tools/call", {"name": tool, "arguments": arguments or {}})
    async with httpx2.AsyncClient(timeout=60) as http:
        response = await http.post(
            url, content=json.dumps(body), headers=_headers(key, True, "tools/call") | {"mcp-name": tool}
        )
    return _answer(response)


async def _upstream_subscriptions(files_url: str) -> list[str]:
    """What the `files` server itself says is subscribed."""
    async with Client(files_url, mode="legacy") as client:
        result = await client.call_tool("list_subscriptions", {})
    return json.loads(result.content[0].text)  # type: ignore[union-attr, no-any-return]


async def _wait_upstream_subscriptions(files_url: str, expected: set[str]) -> None:
    with anyio.fail_after(60):
        while set(await _upstream_subscriptions(files_url)) != expected:
            await anyio.sleep(0.1)


async def _audit(d: Deployment, method: str, **query: Any) -> list[dict[str, Any]]:
    """Audit rows of `method` (oldest first)."""
    async with d.admin() as admin:
        response = await admin.get("/audit", params={"limit": 1000, **query})
        assert response.status_code == 200, response.text
        rows = [r for r in response.json()["items"] if r["method"] == method]
    return rows[::-1]


# -- break 1: one listen request must not break every upstream connection --------------------------


@pytest.mark.parametrize(
    ("notifications", "named"),
    [
        ({"resourceSubscriptions": 5}, "resourceSubscriptions"),
        ({"resourceSubscriptions": [WATCHED, 7]}, "resourceSubscriptions"),
        ({"resourceSubscriptions": "files+test://watched-resource"}, "resourceSubscriptions"),
        ({"toolsListChanged": "yes"}, "toolsListChanged"),
        ({"resourcesListChanged": 1}, "resourcesListChanged"),
        (5, "notifications"),
    ],
)
async def test_a_listen_with_a_malformed_filter_gets_400_and_registers_nothing(
    deployment: Deployment, notifications: Any, named: str
) -> None:
    status, answer = await _refused_listen(deployment.url, deployment.broad, notifications)
    assert status == 400
    assert answer["error"]["code"] == INVALID_PARAMS
    assert named in answer["error"]["message"]
    assert not deployment.gateway.router.listeners


async def test_a_malformed_listen_leaves_upstream_connections_serving_resource_updates(deployment: Deployment) -> None:
    """The issue's repro: after the bad listen, an update from the upstream still reaches a
    lawful listener and the upstream connection stays up."""
    d = deployment
    files = d.gateway.upstreams["files"]
    restarts = files.restarts
    async with listen(d.url, d.broad, {"resourceSubscriptions": [WATCHED]}) as (response, next_frame):
        assert response.status_code == 200
        assert (await next_frame() or {})["method"] == "notifications/subscriptions/acknowledged"
        status, _ = await _refused_listen(d.url, d.broad, {"resourceSubscriptions": 5, "toolsListChanged": True})
        assert status == 400
        for _ in range(2):
            touched = await _call(d.url, d.broad, "files__touch_watched")
            assert "result" in touched, touched
            update = await next_frame()
            assert update is not None and update["method"] == "notifications/resources/updated"
            assert update["params"]["uri"] == WATCHED
    assert files.restarts == restarts and files.state == "ready"
    assert "result" in await _call(d.url, d.broad, "files__echo", {"text": "still up"})


async def test_code_run_for_clients_that_raises_does_not_tear_down_the_upstream(deployment: Deployment) -> None:
    """Structurally: whatever the router does with an upstream event, a failure there is
    the clients' and is not allowed to reach the upstream connection's reader."""
    d = deployment
    files = d.gateway.upstreams["files"]
    restarts = files.restarts
    calls = 0

    async def broken(*args: Any) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("a broken listener")

    d.gateway.router.resource_updated = broken  # type: ignore[method-assign, assignment]
    # The gateway's own connection is subscribed once something follows the resource.
    async with (
        Client(d.files_url, mode="legacy") as direct,
        listen(d.url, d.broad, {"resourceSubscriptions": [WATCHED]}) as (_, next_frame),
    ):
        assert await next_frame() is not None
        await _wait_upstream_subscriptions(d.files_url, {"test://watched-resource"})
        for _ in range(3):
            await direct.call_tool("touch_watched", {})
        with anyio.fail_after(20):
            while calls < 3:
                await anyio.sleep(0.05)
    assert files.restarts == restarts and files.state == "ready"
    assert "result" in await _call(d.url, d.broad, "files__echo", {"text": "still up"})


# -- break 2: listen is governed like subscribe; upstream subscriptions are counted ---------------


async def test_listening_on_a_forbidden_upstream_is_refused_audited_and_subscribes_nothing(
    deployment: Deployment,
) -> None:
    d = deployment
    status, answer = await _refused_listen(d.url, d.narrow, {"resourceSubscriptions": [WATCHED]})
    assert status == 200 and answer["error"]["code"] == GATEWAY_DENIED
    assert not d.gateway.router.listeners
    assert await _upstream_subscriptions(d.files_url) == []
    rows = await _audit(d, method="subscriptions/listen", kind="decision")
    assert [(r["decision"], r["server"], r["tool"]) for r in rows] == [("deny", "files", "test://watched-resource")]


async def test_listening_on_made_up_uris_is_refused_audited_and_sends_nothing_upstream(
    deployment: Deployment,
) -> None:
    d = deployment
    made_up = [f"files+test://made-up/{i}" for i in range(2000)]
    status, answer = await _refused_listen(d.url, d.broad, {"resourceSubscriptions": made_up})
    assert status == 200 and answer["error"]["code"] == RESOURCE_NOT_FOUND
    assert not d.gateway.router.listeners and not d.gateway.upstreams["files"].subscriptions
    assert await _upstream_subscriptions(d.files_url) == []
    rows = await _audit(d, method="subscriptions/listen")
    assert any(r["tool"] == "test://made-up/0" for r in rows)


async def test_subscribing_to_a_made_up_uri_is_refused_audited_and_sends_nothing_upstream(
    deployment: Deployment,
) -> None:
    d = deployment
    async with httpx2.AsyncClient(timeout=60) as http:
        session = Handshake(http, d.url, d.broad)
        assert (await session.initialize()).status_code == 200
        answer = _answer(await session.request("resources/subscribe", {"uri": "files+test://made-up/x"}))
    assert answer["error"]["code"] == RESOURCE_NOT_FOUND
    assert await _upstream_subscriptions(d.files_url) == []
    rows = await _audit(d, method="resources/subscribe")
    assert [(r["kind"], r["tool"], r.get("outcome")) for r in rows] == [
        ("decision", "test://made-up/x", None),
        ("completion", "test://made-up/x", "not_found"),
    ]


async def test_two_thousand_listened_uris_leave_nothing_subscribed_upstream_once_their_streams_close(
    deployment: Deployment,
) -> None:
    d = deployment
    streams, per_stream = 20, 100
    uris = [f"files+test://template/{i}/data" for i in range(streams * per_stream)]
    async with anyio.create_task_group() as tg:
        opened = anyio.Semaphore(0)
        done = anyio.Event()

        async def hold(chunk: list[str]) -> None:
            async with listen(d.url, d.broad, {"resourceSubscriptions": chunk}) as (response, next_frame):
                assert response.status_code == 200
                ack = await next_frame()
                assert ack is not None and ack["method"] == "notifications/subscriptions/acknowledged"
                opened.release()
                await done.wait()

        for n in range(streams):
            tg.start_soon(hold, uris[n * per_stream : (n + 1) * per_stream])
        for _ in range(streams):
            with anyio.fail_after(120):
                await opened.acquire()
        # Made-up URIs in between are refused and subscribe nothing.
        status, _ = await _refused_listen(d.url, d.broad, {"resourceSubscriptions": ["files+test://nope/1"]})
        assert status == 200
        subscribed = await _upstream_subscriptions(d.files_url)
        assert len(subscribed) == len(uris) and "test://nope/1" not in subscribed
        done.set()
    await _wait_upstream_subscriptions(d.files_url, set())
    assert not d.gateway.upstreams["files"].subscriptions and not len(d.gateway.router.subscriptions)


async def test_an_upstream_subscription_lives_as_long_as_any_session_or_stream_holds_it(
    deployment: Deployment,
) -> None:
    d = deployment
    async with httpx2.AsyncClient(timeout=60) as http:
        session = Handshake(http, d.url, d.broad)
        assert (await session.initialize()).status_code == 200
        assert "result" in _answer(await session.request("resources/subscribe", {"uri": WATCHED}))
        async with listen(d.url, d.broad, {"resourceSubscriptions": [WATCHED]}) as (_, next_frame):
            assert await next_frame() is not None
            assert "result" in _answer(await session.request("resources/unsubscribe", {"uri": WATCHED}))
            # The listen stream still wants it.
            assert await _upstream_subscriptions(d.files_url) == ["test://watched-resource"]
            assert "result" in _answer(await session.request("resources/subscribe", {"uri": WATCHED}))
        assert await _upstream_subscriptions(d.files_url) == ["test://watched-resource"]  # the session still does
        await http.delete(d.url, headers=_headers(d.broad, False, session=session.id))
    await _wait_upstream_subscriptions(d.files_url, set())


# -- break 10: kill switches and revocation reach what is open ------------------------------------


@asynccontextmanager
async def get_stream(http: httpx2.AsyncClient, url: str, key: str) -> AsyncIterator[tuple[Handshake, Any]]:
    """A handshake session with its GET stream open; yields the session and a function that
    waits for the stream to end."""
    session = Handshake(http, url, key)
    assert (await session.initialize()).status_code == 200
    headers = _headers(key, False, session=session.id) | {"accept": "text/event-stream"}
    async with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        chunks = response.aiter_bytes()
        assert b"stream open" in await chunks.__anext__()

        async def ended() -> None:
            with anyio.fail_after(20):
                async for _ in chunks:
                    pass

        yield session, ended


async def _stream_ends(next_frame: Callable[[], Awaitable[dict[str, Any] | None]]) -> None:
    while await next_frame() is not None:
        pass


async def test_a_team_switch_ends_that_teams_open_streams_and_their_subscriptions(deployment: Deployment) -> None:
    d = deployment
    other_key = await create_key(d.url, "narrow", "bystander", ADMIN)
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        listen(d.url, d.broad, {"resourceSubscriptions": [WATCHED], "toolsListChanged": True}) as (_, frames),
        listen(d.url, other_key, {"toolsListChanged": True}) as (_, bystander),
        get_stream(http, d.url, d.broad) as (session, get_ended),
    ):
        assert (await frames() or {})["method"] == "notifications/subscriptions/acknowledged"
        assert (await bystander() or {})["method"] == "notifications/subscriptions/acknowledged"
        assert "result" in _answer(await session.request("resources/subscribe", {"uri": WATCHED}))
        async with d.admin() as admin:
            engaged = await admin.post("/kill-switches", json={"scope": "team", "team": "broad", "reason": "incident"})
            assert engaged.status_code == 201, engaged.text
        await get_ended()
        await _stream_ends(frames)
        await _wait_upstream_subscriptions(d.files_url, set())
        # The other team's stream is still open: it hears of the change of what it may see.
        assert (await bystander() or {}).get("method") == "notifications/tools/list_changed"
        # And no new stream opens for the stopped team.
        _, answer = await _refused_listen(d.url, d.broad, {"toolsListChanged": True})
        assert answer["error"]["code"] == GATEWAY_DENIED and answer["error"]["data"]["reason"] == "kill_switch"
    rows = await _audit(d, method="subscriptions/listen", kind="completion")
    assert [r["outcome"] for r in rows] == ["killed"]


async def test_revoking_a_key_ends_its_streams_calls_and_sessions_at_once(deployment: Deployment) -> None:
    d = deployment
    async with d.admin() as admin:
        made = await admin.post("/keys", json={"team": "broad", "name": "doomed"})
        doomed, doomed_id = made.json()["key"], made.json()["id"]
    outcome: dict[str, Any] = {}
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        listen(d.url, doomed, {"resourceSubscriptions": [WATCHED]}) as (_, frames),
        get_stream(http, d.url, doomed) as (session, get_ended),
        anyio.create_task_group() as tg,
    ):
        assert await frames() is not None

        async def slow_call() -> None:
            outcome["answer"] = await _call(d.url, doomed, "files__slow", {"seconds": 60})

        tg.start_soon(slow_call)
        with anyio.fail_after(20):
            while len(d.gateway.governance.inflight) < 1:
                await anyio.sleep(0.02)
        async with d.admin() as admin:
            assert (await admin.delete(f"/keys/{doomed_id}")).status_code == 200
        await get_ended()
        await _stream_ends(frames)
    error = outcome["answer"]["error"]
    assert error["code"] == GATEWAY_DENIED and error["data"]["reason"] == "kill_switch"
    async with httpx2.AsyncClient(timeout=60) as http:
        # Its handshake session is gone (a new key of the same principal finds none).
        fresh = await create_key(d.url, "broad", "doomed", ADMIN)
        session.http, session.key = http, fresh
        assert (await session.request("ping", {})).status_code == 404
    await _wait_upstream_subscriptions(d.files_url, set())
    # The other key of the team keeps working.
    assert "result" in await _call(d.url, d.broad, "files__echo", {"text": "unaffected"})


async def test_a_server_switch_filters_what_open_listen_streams_deliver(deployment: Deployment) -> None:
    """Decided at delivery: the stream stays open, but an update from a stopped server is
    not delivered while the switch holds; updates from other servers still are."""
    d = deployment
    router = d.gateway.router
    relayed = anyio.Event()
    original = router.resource_updated

    async def spy(upstream: Any, uri: str, params: dict[str, Any]) -> None:
        await original(upstream, uri, params)
        if upstream.name == "files":
            relayed.set()

    router.resource_updated = spy  # type: ignore[method-assign]
    other_uri = "other+test://watched-resource"
    async with (
        Client(d.files_url, mode="legacy") as direct,
        listen(d.url, d.broad, {"resourceSubscriptions": [WATCHED, other_uri]}) as (_, next_frame),
    ):
        assert (await next_frame() or {})["method"] == "notifications/subscriptions/acknowledged"
        async with d.admin() as admin:
            engaged = await admin.post("/kill-switches", json={"scope": "server", "server": "files", "reason": "x"})
            assert engaged.status_code == 201, engaged.text
        await direct.call_tool("touch_watched", {})  # the files server tells the gateway
        with anyio.fail_after(20):
            await relayed.wait()  # ... and the gateway has handled it
        assert "result" in await _call(d.url, d.broad, "other__touch_watched")
        update = await next_frame()
        assert update is not None and update["params"]["uri"] == other_uri


# -- break 7: per-principal caps --------------------------------------------------------------------


async def test_one_principal_filling_its_session_quota_does_not_lock_out_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's flood at a smaller scale: the global table (300) is larger than one
    principal's quota (the default, 256), so the flood fills only the quota."""
    monkeypatch.setenv(ADMIN_ENV, ADMIN)
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(
        tmp_path,
        {},
        auth="keys",
        policies="policies",
        admin_token={"$env": ADMIN_ENV},
        max_sessions=300,
        session_handshake_timeout=600,  # the flood never speaks after initialize: kept while it lasts
    )
    async with serve(config) as (url, _), httpx2.AsyncClient(timeout=60) as http:
        flooder = await create_key(url, "broad", "flooder", ADMIN)
        victim = await create_key(url, "narrow", "victim", ADMIN)
        statuses = []
        for _ in range(300):
            response = await Handshake(http, url, flooder).initialize()
            statuses.append(response.status_code)
        assert statuses.count(200) == 256 and statuses.count(429) == 44
        refused = await Handshake(http, url, flooder).initialize()
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert refused.json()["error"]["data"]["limit"] == "max_sessions_per_principal"
        assert (await Handshake(http, url, victim).initialize()).status_code == 200


async def test_one_principal_filling_its_stream_quota_does_not_lock_out_another(deployment: Deployment) -> None:
    d = deployment
    quota = 64  # the default max_streams_per_principal
    async with anyio.create_task_group() as tg:
        opened = anyio.Semaphore(0)
        done = anyio.Event()

        async def hold() -> None:
            async with listen(d.url, d.broad, {"toolsListChanged": True}) as (response, next_frame):
                assert response.status_code == 200
                assert await next_frame() is not None
                opened.release()
                await done.wait()

        for _ in range(quota):
            tg.start_soon(hold)
        for _ in range(quota):
            with anyio.fail_after(60):
                await opened.acquire()
        status, answer = await _refused_listen(d.url, d.broad, {"toolsListChanged": True})
        assert status == 429 and answer["error"]["data"]["limit"] == "max_streams_per_principal"
        async with listen(d.url, d.narrow, {"toolsListChanged": True}) as (response, next_frame):
            assert response.status_code == 200 and await next_frame() is not None
        done.set()


async def test_one_principal_filling_its_subscription_quota_does_not_lock_out_another(deployment: Deployment) -> None:
    d = deployment
    too_many = [f"files+test://template/{i}/data" for i in range(4097)]  # the default quota is 4096
    status, answer = await _refused_listen(d.url, d.broad, {"resourceSubscriptions": too_many})
    assert status == 429 and answer["error"]["data"]["limit"] == "max_subscriptions_per_principal"
    assert await _upstream_subscriptions(d.files_url) == []
    other = await create_key(d.url, "broad", "other", ADMIN)
    async with listen(d.url, other, {"resourceSubscriptions": too_many[:10]}) as (response, next_frame):
        assert response.status_code == 200 and await next_frame() is not None


async def test_revoking_the_key_of_a_stdio_session_ends_its_call_in_flight_and_the_session(
    deployment: Deployment,
) -> None:
    """`mcp-gateway stdio` with MCP_GATEWAY_KEY: revocation (seen on the store by that
    process) ends its call in flight with the kill error, then the session: stdout closes,
    and the process exits once the client lets go of stdin."""
    d = deployment
    async with d.admin() as admin:
        made = (await admin.post("/keys", json={"team": "broad", "name": "stdio"})).json()
    command = [sys.executable, "-m", "mcp_gateway", "stdio", "--config", str(d.config), "--log-level", "warning"]
    env = {**os.environ, "MCP_GATEWAY_KEY": made["key"]}
    with (d.config.parent / "stdio.log").open("wb") as stderr:
        await _stdio_session_ends_on_revocation(d, made, command, env, stderr)


async def _stdio_session_ends_on_revocation(
    d: Deployment, made: dict[str, Any], command: list[str], env: dict[str, str], stderr: Any
) -> None:
    async with await anyio.open_process(command, env=env, stderr=stderr) as process:
        assert process.stdin is not None and process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)

        async def send(message: dict[str, Any]) -> None:
            assert process.stdin is not None
            await process.stdin.send(json.dumps(message).encode() + b"\n")

        async def receive() -> dict[str, Any] | None:
            try:
                return json.loads(await lines.receive_until(b"\n", 1 << 20))  # type: ignore[no-any-return]
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return None

        init = {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        with anyio.fail_after(60):
            await send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
            assert (await receive() or {}).get("id") == 1
            await send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            slow = {"name": "files__slow", "arguments": {"seconds": 120}, "_meta": {"progressToken": "t"}}
            await send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": slow})
            first = await receive()
            assert first is not None and first.get("method") == "notifications/progress", first  # in flight
        async with d.admin() as admin:
            assert (await admin.delete(f"/keys/{made['id']}")).status_code == 200
        with anyio.fail_after(30):
            answer = await receive()
            while answer is not None and answer.get("id") != 2:
                answer = await receive()
            assert answer is not None and answer["error"]["code"] == GATEWAY_DENIED
            assert await receive() is None  # the session ended: stdout closed
            await process.stdin.aclose()
            assert await process.wait() == 0
