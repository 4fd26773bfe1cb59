"""In-process stand-ins for what the hot path talks to: an upstream MCP server that answers
JSON-RPC dicts from Python (no process, no socket), the transport that carries them, an audit
store in memory, and the gateway's hot path (governance, router, `/mcp` endpoint) assembled
around them in one task group.

The gateway's own code runs unchanged: the real `Upstream` supervisor negotiates with the
scripted server and reads its catalog; only the way it opens a connection is replaced.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from anyio.abc import TaskGroup

from mcp_gateway.audit.redact import ArgumentPolicy
from mcp_gateway.audit.writer import AuditWriter
from mcp_gateway.config import StdioUpstream
from mcp_gateway.governance import Governance
from mcp_gateway.identity import LOCAL, Principal
from mcp_gateway.jsonrpc import Message, RequestId
from mcp_gateway.policy.engine import PolicyState
from mcp_gateway.policy.snapshot import PolicySnapshot, Snapshots
from mcp_gateway.policy_model import KillSwitch, Rule
from mcp_gateway.proxy.router import Router
from mcp_gateway.proxy.rpc import RpcConnection
from mcp_gateway.proxy.session import Call, Session
from mcp_gateway.proxy.upstream import Events, Upstream
from mcp_gateway.transport.http import HttpOptions, McpEndpoint

HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
WAIT = 5.0
"""Seconds a test waits for something that should happen at once (a bound, not a timing)."""
TEST_BOUND = 20.0
"""Seconds one test of the assembled hot path may take in all."""


# -- the upstream's side -----------------------------------------------------------------------


class Peer:
    """What a scripted tool can do to the gateway while it serves a call."""

    def __init__(self, server: ScriptedServer, request: Message) -> None:
        self._server = server
        self.request = request

    @property
    def progress_token(self) -> Any:
        meta = self.request.get("params", {}).get("_meta") or {}
        return meta.get("progressToken")

    @property
    def _related(self) -> RequestId | None:
        return self.request["id"] if self._server.attributed else None

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        await self._server.deliver({"jsonrpc": "2.0", "method": method, "params": params}, self._related)

    async def ask(self, method: str, params: dict[str, Any]) -> Message:
        """Send the gateway a request (sampling, elicitation) and wait for its response."""
        return await self._server.ask(method, params, self._related)


Tool = Callable[[dict[str, Any], Peer], Awaitable[dict[str, Any]]]


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


async def _echo(arguments: dict[str, Any], peer: Peer) -> dict[str, Any]:
    return text(str(arguments.get("text", "")))


ECHO_TOOL = {
    "name": "echo",
    "description": "returns its text",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


async def _ask(arguments: dict[str, Any], peer: Peer) -> dict[str, Any]:
    answer = await peer.ask("elicitation/create", {"message": "your name?", "requestedSchema": {"type": "object"}})
    if "error" in answer:
        return {"content": [{"type": "text", "text": answer["error"]["message"]}], "isError": True}
    return text(f"hello {answer['result']['content']['name']}")


async def _progress(arguments: dict[str, Any], peer: Peer) -> dict[str, Any]:
    await peer.notify("notifications/progress", {"progressToken": peer.progress_token, "progress": 1, "total": 2})
    return text("done")


async def _log(arguments: dict[str, Any], peer: Peer) -> dict[str, Any]:
    await peer.notify("notifications/message", {"level": arguments.get("level", "info"), "data": "hello"})
    return text("logged")


async def _slow(arguments: dict[str, Any], peer: Peer) -> dict[str, Any]:
    await anyio.sleep_forever()
    return text("never")


UPSTREAM_STATE = "upstream-state-1"


async def _round_trip(arguments: dict[str, Any], peer: Peer) -> dict[str, Any]:
    """2026-07-28 style: no request mid-call, an `input_required` result and a retry instead."""
    params = peer.request["params"]
    responses = params.get("inputResponses")
    if responses is None:
        return {
            "resultType": "input_required",
            "inputRequests": {"name": {"method": "elicitation/create", "params": {"message": "your name?"}}},
            "requestState": UPSTREAM_STATE,
        }
    if params.get("requestState") != UPSTREAM_STATE:
        return {"content": [{"type": "text", "text": "state lost"}], "isError": True}
    return text(f"hello {responses['name']['content']['name']}")


RICH_TOOLS: dict[str, Tool] = {
    "ask": _ask,
    "progress": _progress,
    "log": _log,
    "slow": _slow,
    "round_trip": _round_trip,
}
"""Tools that talk back: `ask` elicits a name from the client mid-call, `round_trip` by an
`input_required` result (as a 2026-07-28 server does), `progress` and `log` notify, `slow`
runs until cancelled."""


class ScriptedServer:
    """A handshake-era MCP server in Python: tools are coroutines, everything it receives is kept.

    Like a stdio server, nothing it sends says which call it belongs to; `attributed=True`
    makes it name the request it is serving, as a Streamable HTTP server's POST stream does."""

    def __init__(
        self,
        tools: dict[str, Tool] | None = None,
        schemas: Sequence[dict[str, Any]] = (),
        attributed: bool = False,
        modern: bool = False,
    ) -> None:
        self.attributed = attributed
        self.modern = modern
        """Speaks 2026-07-28 (answers `server/discover`) rather than the handshake."""
        self.tools: dict[str, Tool] = {"echo": _echo, **(tools or {})}
        self.schemas = {s["name"]: s for s in [ECHO_TOOL, *schemas]}
        self.received: list[Message] = []
        self.cancelled: list[Any] = []
        """Request ids the gateway sent `notifications/cancelled` for."""
        self.deliver: Callable[[Message, RequestId | None], Awaitable[None]] = _nowhere
        self.transport: LoopbackTransport | None = None
        """The connection the gateway holds to it now."""
        self._running: dict[RequestId, anyio.CancelScope] = {}
        self._asked: dict[RequestId, asyncio.Future[Message]] = {}
        self._ids = 0

    def hang_up(self) -> None:
        """End the gateway's connection, as a server that exits does."""
        assert self.transport is not None
        self.transport.break_("the scripted server hung up")

    def calls(self, method: str = "tools/call") -> list[Message]:
        return [m for m in self.received if m.get("method") == method]

    async def ask(self, method: str, params: dict[str, Any], related: RequestId | None = None) -> Message:
        self._ids += 1
        request_id = f"up-{self._ids}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._asked[request_id] = future
        await self.deliver({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, related)
        return await future

    async def receive(self, message: Message, tg: TaskGroup) -> None:
        """One message from the gateway."""
        self.received.append(message)
        if "method" not in message:  # the gateway's answer to one of our requests
            future = self._asked.pop(message.get("id"), None)  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(message)
            return
        if "id" not in message:
            if message["method"] == "notifications/cancelled":
                request_id = message["params"]["requestId"]
                self.cancelled.append(request_id)
                scope = self._running.get(request_id)
                if scope is not None:
                    scope.cancel()
            return
        tg.start_soon(self._serve, message)

    async def _serve(self, message: Message) -> None:
        request_id = message["id"]
        with anyio.CancelScope() as scope:
            self._running[request_id] = scope
            try:
                reply = {"jsonrpc": "2.0", "id": request_id, "result": await self._answer(message)}
            except LookupError as exc:
                reply = {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": str(exc)}}
            finally:
                del self._running[request_id]
        if not scope.cancelled_caught:
            await self.deliver(reply, None)

    async def _answer(self, message: Message) -> dict[str, Any]:
        method, params = message["method"], message.get("params") or {}
        if method == "server/discover" and self.modern:
            return {"supportedVersions": [MODERN], "capabilities": {"tools": {}}}
        if method == "initialize":
            return {
                "protocolVersion": HANDSHAKE,
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "scripted", "version": "1"},
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {
                "tools": [
                    self.schemas.get(name, {"name": name, "inputSchema": {"type": "object"}}) for name in self.tools
                ]
            }
        if method == "tools/call":
            return await self.tools[params["name"]](params.get("arguments") or {}, Peer(self, message))
        raise LookupError(f"Method not found: {method}")


async def _nowhere(message: Message, related: RequestId | None) -> None:
    raise AssertionError("the scripted server is not connected")


class LoopbackTransport:
    """The `Transport` an `RpcConnection` uses to reach a `ScriptedServer` in this process.

    Like stdio, a request's answer comes back later through the connection's `feed`."""

    def __init__(self, server: ScriptedServer, feed: Callable[..., Awaitable[None]], tg: TaskGroup) -> None:
        self.server = server
        self.tg = tg
        self.broken = asyncio.Event()
        self.broken_reason = ""
        self.suspect = asyncio.Event()
        server.deliver = feed
        server.transport = self

    def break_(self, reason: str) -> None:
        self.broken_reason = reason
        self.broken.set()

    async def send(self, message: Message, headers: dict[str, str] | None = None) -> None:
        await self.server.receive(message, self.tg)

    def abandon(self, request_id: RequestId) -> bool:
        return True


class InProcessUpstream(Upstream):
    """The gateway's upstream supervisor, connected to a `ScriptedServer` instead of a child process."""

    def __init__(self, name: str, server: ScriptedServer, **config: Any) -> None:
        protocol = "modern" if server.modern else "handshake"
        super().__init__(name, StdioUpstream(command="in-process", protocol=protocol, **config), Events())
        self.server = server

    async def _open(self, stack: AsyncExitStack, tg: TaskGroup, conn: RpcConnection) -> tuple[Any, anyio.Event]:
        transport = LoopbackTransport(self.server, conn.feed, tg)
        lost = anyio.Event()

        async def watch() -> None:
            await transport.broken.wait()
            lost.set()

        tg.start_soon(watch)
        return transport, lost


# -- the gateway's side ----------------------------------------------------------------------------


class MemoryAudit:
    """An audit store that commits at once, into a list."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def head(self, chain: str) -> tuple[int, str] | None:
        return (self.rows[-1]["chain_seq"], self.rows[-1]["hash"]) if self.rows else None

    async def append(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    async def probe(self, row: dict[str, Any]) -> None:
        """Rows can always be appended here (the writer's health probe leaves nothing)."""

    async def aclose(self) -> None:
        pass

    def decisions(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["kind"] == "decision"]


ALLOW_LOCAL = (Rule(id="local-all", team="local", effect="allow", servers=("*",)),)


def snapshots_of(rules: Sequence[Rule], switches: Sequence[KillSwitch] = ()) -> Snapshots:
    """A snapshot holder that never reads a store: it holds `rules` and `switches`, always fresh."""
    snapshots = Snapshots(None, max_age=math.inf, poll_interval=3600.0)  # type: ignore[arg-type]
    snapshots.current = PolicySnapshot(policy=PolicyState.build(rules, switches, version=1, policy_version=1))
    snapshots.checked_at = time.monotonic()
    return snapshots


@dataclass
class Hotpath:
    router: Router
    endpoint: McpEndpoint
    audit: MemoryAudit
    governance: Governance
    servers: dict[str, ScriptedServer]
    tg: TaskGroup
    principal: list[Principal] = field(default_factory=lambda: [LOCAL])
    """Who the next request is authenticated as (the test may change it)."""

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.endpoint), base_url="http://gateway")


@asynccontextmanager
async def hotpath(
    servers: dict[str, ScriptedServer] | None = None,
    rules: Sequence[Rule] = ALLOW_LOCAL,
    options: HttpOptions | None = None,
    max_parked: int = 32,
) -> AsyncIterator[Hotpath]:
    """Governance, router and `/mcp` endpoint over in-process upstreams, all ready."""
    servers = {"files": ScriptedServer()} if servers is None else servers
    async with anyio.create_task_group() as tg:
        audit = MemoryAudit()
        writer = AuditWriter(audit, "unit", timeout=WAIT)  # type: ignore[arg-type]
        await writer.start(tg)
        governance = Governance(snapshots_of(rules), writer, ArgumentPolicy("digest"))
        upstreams: dict[str, Upstream] = {name: InProcessUpstream(name, s) for name, s in servers.items()}
        router = Router(upstreams, governance, tg, max_parked_per_principal=max_parked)
        governance.on_change = router.policy_changed
        for upstream in upstreams.values():
            upstream.events = router
            tg.start_soon(upstream.run)
        with anyio.fail_after(WAIT):
            for upstream in upstreams.values():
                await upstream.ready.wait()
        who: list[Principal] = [LOCAL]

        async def authenticate(scope: Any) -> Principal:
            return who[0]

        endpoint = McpEndpoint(router, authenticate, tg, options)
        with anyio.fail_after(TEST_BOUND):  # a behaviour that breaks by hanging fails instead
            yield Hotpath(router, endpoint, audit, governance, servers, tg, who)
        tg.cancel_scope.cancel()


def rpc(method: str, params: dict[str, Any] | None = None, id: RequestId = 1) -> Message:
    message: Message = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return message


JSON_AND_SSE = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def events_of(body: str) -> list[dict[str, str]]:
    """The SSE events of a response body, each as its fields (comments left out)."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = fields.get(name, "") + value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


INITIALIZE = {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "unit", "version": "1"}}


async def initialize(http: httpx2.AsyncClient, capabilities: dict[str, Any] | None = None) -> str:
    """A handshake-era session; its id."""
    params = {**INITIALIZE, "capabilities": capabilities or {}}
    response = await http.post("/mcp", json=rpc("initialize", params), headers=JSON_AND_SSE)
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def in_session(session_id: str) -> dict[str, str]:
    return {**JSON_AND_SSE, "mcp-session-id": session_id, "mcp-protocol-version": HANDSHAKE}


def answer_of(response: httpx2.Response) -> Message:
    """The JSON-RPC answer in a response, JSON or the last event of a stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return json.loads(events_of(response.text)[-1]["data"])  # type: ignore[no-any-return]
    return response.json()  # type: ignore[no-any-return]


def modern_post(
    method: str, params: dict[str, Any], id: RequestId = 1, caps: dict[str, Any] | None = None
) -> tuple[Message, dict[str, str]]:
    """A 2026-07-28 request and the headers that must agree with it."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": caps or {}}
    headers = {**JSON_AND_SSE, "mcp-protocol-version": MODERN, "mcp-method": method}
    name = params.get("uri" if method == "resources/read" else "name")
    if isinstance(name, str):
        headers["mcp-name"] = name
    return rpc(method, {**params, "_meta": meta}, id), headers


class Streamed:
    """A response read as the app writes it (httpx's ASGI transport hands over only finished ones)."""

    def __init__(self, chunks: Any, hang_up: anyio.Event) -> None:
        self._chunks = chunks
        self.hang_up = hang_up
        self.status = 0
        self.headers: dict[str, str] = {}
        self.text = ""
        self.ended = False

    async def _next(self) -> None:
        message = await self._chunks.receive()
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            self.text += message.get("body", b"").decode()
            self.ended = not message.get("more_body", False)

    async def until(self, done: Callable[[Streamed], bool]) -> Streamed:
        """Read on until `done(self)` holds (or the response ends)."""
        with anyio.fail_after(WAIT):
            while not done(self) and not self.ended:
                await self._next()
        return self

    def events(self) -> list[Message]:
        return [json.loads(e["data"]) for e in events_of(self.text) if e.get("data")]  # a priming event has no data


@asynccontextmanager
async def streamed(app: Any, method: str, headers: dict[str, str], body: Any = None) -> AsyncIterator[Streamed]:
    """Send one request to `app`; the client hangs up when the block ends."""
    data = json.dumps(body).encode() if body is not None else b""
    send, chunks = anyio.create_memory_object_stream[dict[str, Any]](1000)
    hang_up = anyio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": data, "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": method,
        "path": "/mcp",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }

    async def run() -> None:
        async with send:
            await app(scope, receive, send.send)

    async with anyio.create_task_group() as tg, chunks:
        tg.start_soon(run)
        yield Streamed(chunks, hang_up)
        hang_up.set()
        with anyio.fail_after(WAIT):
            async for _ in chunks:
                pass  # let the app finish writing


def tool_call(name: str, arguments: dict[str, Any]) -> Call:
    """A handshake-era client's `tools/call`, as the router is handed it."""
    return Call(Session(LOCAL, protocol_version=HANDSHAKE), 1, "tools/call", {"name": name, "arguments": arguments})


class CatalogApplied(Events):
    """Forwards an upstream's events to the router and says when a catalog change was applied
    (`applied`; replace it with a new Event to wait for the next one)."""

    def __init__(self, router: Events) -> None:
        self.router = router
        self.applied = anyio.Event()

    async def catalog_changed(self, upstream: Upstream) -> None:
        await self.router.catalog_changed(upstream)
        self.applied.set()
