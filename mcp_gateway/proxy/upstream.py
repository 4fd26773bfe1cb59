"""One upstream MCP server: its supervised connection, its protocol era and its catalog.

`Upstream.run` owns the connection for the life of the gateway: it connects (spawning
the process or reaching the URL), negotiates the protocol era, reads the catalog, serves
calls, and when the connection dies it fails the calls in flight, reports itself down
(its tools leave the gateway's catalog), and reconnects with exponential backoff. One
upstream's failure never touches another's.

Era: with `protocol: auto` the gateway probes `server/discover` and speaks 2026-07-28 when
the upstream does, because there every request is self-contained and elicitation or
sampling come back as the call's own result; otherwise it performs the `initialize`
handshake.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup
from mcp.shared.inbound import encode_header_value

from .. import __version__, jsonrpc
from ..config import HttpUpstream, StdioUpstream, UpstreamConfig, resolve
from ..errors import GatewayError, RpcError, UpstreamError
from ..jsonrpc import Message
from ..observe.tracing import TRACEPARENT
from ..protocol import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    ENVELOPE_META_KEYS,
    LATEST_HANDSHAKE_VERSION,
    LATEST_MODERN_VERSION,
    LOG_LEVEL_META_KEY,
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
    TASKS_EXTENSION,
)
from . import http_client, stdio_client
from .rpc import RpcConnection, Sink
from .schemas import CompiledTool, schema_text

log = logging.getLogger(__name__)

GATEWAY_INFO = {"name": "mcp-gateway", "version": __version__}
# What the gateway can relay to its clients. Whether a given client can answer is
# checked per call; a handshake-era upstream learns the capabilities once, at initialize.
CLIENT_CAPS: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": True}}
_NAME_HEADER_PARAM = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "tasks/get": "taskId",
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}
_LIST_METHODS = {
    "tools": ("tools/list", "tools"),
    "prompts": ("prompts/list", "prompts"),
    "resources": ("resources/list", "resources"),
    "templates": ("resources/templates/list", "resourceTemplates"),
}
_CHANGED = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/prompts/list_changed": ("prompts",),
    "notifications/resources/list_changed": ("resources", "templates"),
}
MAX_PAGES = 100
COMPILE_TURN = 0.005
"""Seconds of compiling tools between two yields to the event loop (a rich schema takes
~0.7 ms, a flat one ~5 us): an upstream listing a thousand rich tools cannot hold the loop."""
THREAD_SCHEMA_BYTES = 4 * 1024
"""A tool schema larger than this (as JSON) is compiled on a worker thread: compiling costs
~3 us a byte (`jsonschema` checking the schema against its metaschema), and done on the
loop, one 2 MB schema held it ~7 s, every call and health check of every upstream waiting.
Below it a compile holds the loop ~10 ms at most; a thread's own cost is ~0.1 ms."""
MAX_SCHEMA_BYTES = 1024 * 1024
"""A tool schema larger than this is not compiled at all: its arguments are not checked (the
upstream remains their judge, as for an invalid schema), and it is logged."""
REFRESH_PAUSE = 0.05
"""Seconds a refresh waits after the first list change, so a burst of them is read once."""
REFRESH_SHARE = 0.2
"""At most this share of the time goes to re-reading one upstream's changed lists: after a
refresh that took `r` seconds, the next starts no sooner than `r * (1 / share - 1)` after it
(nor sooner than `REFRESH_PAUSE` after the notice that wakes it). A refresh costs the gateway
the parsing of every page (up to `MAX_PAGES` answers) and the compiling of each changed tool
schema (~100 times its parsing): without this, an upstream announcing list changes in a loop
kept the gateway reading most of the time (measured: 54% with a 60 ms list; 61% compiling
four changed tools at 20 ms each). Wall time, so a slow upstream's lists are also re-read
less often: its own changes reach clients later, no one else's."""

State = Literal["connecting", "ready", "down", "disabled"]


@dataclass
class UpstreamCatalog:
    """What one upstream offers, as it sent it, and each tool compiled."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    compiled: dict[str, CompiledTool] = field(default_factory=dict)
    """Tool name -> the tool compiled, built with the list (the first tool listed under a name
    wins, as in the gateway's catalog); a tool not given compiled is compiled here."""

    def __post_init__(self) -> None:
        for tool in self.tools:
            if tool["name"] not in self.compiled:
                self.compiled[tool["name"]] = CompiledTool.compile(tool)

    def get(self, kind: str) -> list[dict[str, Any]]:
        return getattr(self, kind)  # type: ignore[no-any-return]


class Events:
    """What an upstream tells the gateway about itself."""

    async def catalog_changed(self, upstream: Upstream) -> None:
        """Its state or catalog changed."""

    async def resource_updated(self, upstream: Upstream, uri: str, params: dict[str, Any]) -> None:
        """A resource someone subscribed to changed."""


class Upstream:
    """A supervised connection to one upstream server."""

    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        events: Events,
    ) -> None:
        self.name = name
        self.config = config
        self.namespace = name if config.namespace is None else config.namespace
        self.events = events
        self.state: State = "connecting" if config.enabled else "disabled"
        self.since = time.time()
        self.last_error = ""
        self.restarts = 0
        self.protocol_version = ""
        self.modern = False
        self.capabilities: dict[str, Any] = {}
        self.server_info: dict[str, Any] = {}
        self.instructions: str | None = None
        self.catalog = UpstreamCatalog()
        self.ready = anyio.Event()
        self._attempted = not config.enabled
        self._first_attempt_since: float | None = None
        self.subscriptions: set[str] = set()
        self._conn: RpcConnection | None = None
        self._transport: Any = None
        self._tg: TaskGroup | None = None
        self._dirty: set[str] = set()
        self._refresh_wake = anyio.Event()
        self._listen_scope: anyio.CancelScope | None = None

    # -- supervision -----------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Whether its first connection attempt has ended, up or failed (or could have: an
        attempt is given `connect_timeout`, and one that takes longer counts as failed).
        Until every enabled upstream's has, the gateway is not ready: its catalog would be
        missing tools that are about to appear."""
        if self._attempted:
            return True
        since = self._first_attempt_since
        return since is not None and time.monotonic() - since >= self.config.connect_timeout

    async def run(self) -> None:
        """Keep a connection up until cancelled."""
        if not self.config.enabled:
            return
        self._first_attempt_since = time.monotonic()
        delay = 0.25
        while True:
            started = time.monotonic()
            try:
                await self._serve_one_connection()
            except Exception as exc:  # the top of a supervision loop: never die, report
                cause = _root_cause(exc)
                if not isinstance(cause, GatewayError | OSError | anyio.BrokenResourceError):
                    log.error("%s: connection failed", self.name, exc_info=cause)
                self._set_down(describe(cause))
            self._attempted = True
            self.restarts += 1
            if time.monotonic() - started > 30:
                delay = 0.25  # it ran a good while: reconnect quickly
            await anyio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 30.0)

    def _set_down(self, reason: str) -> None:
        if self.state != "down":
            log.warning("%s: down: %s", self.name, reason)
            self.since = time.time()
        self.last_error = reason
        self.state = "down"
        self.ready = anyio.Event()
        self.catalog = UpstreamCatalog()

    async def _serve_one_connection(self) -> None:
        conn = RpcConnection(self.name, self._on_notification)
        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            transport, lost = await self._open(stack, tg, conn)
            conn.bind(transport, tg)
            self._conn, self._transport, self._tg = conn, transport, tg
            reason: str | None = None
            try:
                with anyio.fail_after(self.config.connect_timeout):
                    await self._negotiate(conn, transport)
                    self.catalog = await self._read_catalog(conn, set(_LIST_METHODS))
                self.state, self.since, self.last_error = "ready", time.time(), ""
                self._attempted = True
                self.ready.set()
                log.info("%s: ready (%s, %d tools)", self.name, self.protocol_version, len(self.catalog.tools))
                await self.events.catalog_changed(self)
                tg.start_soon(self._refresher, conn)
                tg.start_soon(self._health, conn, transport)
                await self._resubscribe(conn)
                await lost.wait()
            except anyio.get_cancelled_exc_class():
                conn.close("the gateway is shutting down")
                self._conn, self.state = None, "down"
                raise
            except Exception as exc:
                reason = describe(_root_cause(exc))
                raise
            finally:
                if not conn.closed.is_set():
                    if reason is None:
                        reason = getattr(transport, "broken_reason", "") or "connection closed"
                        exit_code = stdio_client.exited(transport)
                        if exit_code is not None:
                            reason = f"process exited with status {exit_code}"
                    # Fail the calls in flight and take the tools away now, not after the reconnect.
                    conn.close(reason)
                    self._conn = None
                    self._set_down(reason)
                    await self.events.catalog_changed(self)
        raise UpstreamError(reason or "connection closed")

    async def _open(self, stack: AsyncExitStack, tg: TaskGroup, conn: RpcConnection) -> tuple[Any, anyio.Event]:
        """Open the transport; returns it and an event set when the connection is lost."""
        config = self.config
        lost = anyio.Event()
        if isinstance(config, StdioUpstream):
            transport = await stack.enter_async_context(stdio_client.open_stdio(self.name, config, tg, conn.feed))

            async def watch_stdio() -> None:
                # Exited, or its stdout ended or was given up on: either way the connection is over.
                await transport.broken.wait()
                lost.set()

            tg.start_soon(watch_stdio)
            return transport, lost
        assert isinstance(config, HttpUpstream)
        headers = {k.lower(): resolve(v) for k, v in config.headers.items()}
        http = http_client.HttpTransport(self.name, config.url, headers, conn.feed)
        stack.push_async_callback(http.terminate)

        async def watch_broken() -> None:
            await http.broken.wait()
            lost.set()

        tg.start_soon(watch_broken)
        return http, lost

    # -- negotiation -----------------------------------------------------------------

    async def _negotiate(self, conn: RpcConnection, transport: Any) -> None:
        if self.config.protocol != "handshake" and await self._discover(conn, transport):
            return
        if self.config.protocol == "modern":
            raise UpstreamError(f"upstream {self.name!r} does not speak {LATEST_MODERN_VERSION}")
        await self._initialize(conn, transport)

    async def _discover(self, conn: RpcConnection, transport: Any) -> bool:
        http = transport if isinstance(transport, http_client.HttpTransport) else None
        if http is not None:
            http.protocol_version, http.modern = LATEST_MODERN_VERSION, True
        try:
            with anyio.fail_after(10):
                result = await conn.request(
                    "server/discover", self._envelope({}, CLIENT_CAPS), headers=self._headers("server/discover", {})
                )
        except (RpcError, TimeoutError, UpstreamError) as exc:
            log.debug("%s: server/discover failed (%s); using the initialize handshake", self.name, exc)
            result = {}
        versions = result.get("supportedVersions")
        if not isinstance(versions, list) or LATEST_MODERN_VERSION not in versions:
            if http is not None:
                http.protocol_version, http.modern = None, False
            return False
        self.modern = True
        self.protocol_version = LATEST_MODERN_VERSION
        self.capabilities = result.get("capabilities") or {}
        self.instructions = result.get("instructions")
        # At 2026-07-28 the server names itself in each result's `_meta` stamp.
        meta = result.get("_meta")
        info = meta.get(SERVER_INFO_META_KEY) if isinstance(meta, dict) else None
        self.server_info = info if isinstance(info, dict) else {}
        return True

    async def _initialize(self, conn: RpcConnection, transport: Any) -> None:
        params = {"protocolVersion": LATEST_HANDSHAKE_VERSION, "capabilities": CLIENT_CAPS, "clientInfo": GATEWAY_INFO}
        result = await conn.request("initialize", params)
        version = result.get("protocolVersion")
        if not isinstance(version, str):
            raise UpstreamError(f"upstream {self.name!r} sent an initialize result without protocolVersion")
        self.modern = False
        self.protocol_version = version
        self.capabilities = result.get("capabilities") or {}
        self.server_info = result.get("serverInfo") or {}
        self.instructions = result.get("instructions")
        if isinstance(transport, http_client.HttpTransport):
            transport.protocol_version = version
        await conn.notify("notifications/initialized")
        if isinstance(transport, http_client.HttpTransport) and transport.session_id is not None:
            assert self._tg is not None
            self._tg.start_soon(transport.listen)
        if "logging" in self.capabilities:
            # Let everything through; each client's own level is applied at the gateway.
            try:
                await conn.request("logging/setLevel", {"level": "debug"}, timeout=10)
            except GatewayError as exc:
                log.debug("%s: logging/setLevel failed: %s", self.name, exc)

    def _envelope(self, params: dict[str, Any], caps: dict[str, Any], log_level: str | None = None) -> dict[str, Any]:
        """Params with the 2026-07-28 per-request `_meta` envelope: the gateway is the client here."""
        meta = {k: v for k, v in jsonrpc.meta_of(params).items() if k not in ENVELOPE_META_KEYS}
        meta[PROTOCOL_VERSION_META_KEY] = LATEST_MODERN_VERSION
        meta[CLIENT_CAPABILITIES_META_KEY] = caps
        meta[CLIENT_INFO_META_KEY] = GATEWAY_INFO
        if log_level is not None:
            meta[LOG_LEVEL_META_KEY] = log_level
        return {**params, "_meta": meta}

    def _headers(self, method: str, params: dict[str, Any]) -> dict[str, str] | None:
        """2026-07-28 HTTP routing headers for one request."""
        if not isinstance(self.config, HttpUpstream):
            return None
        headers = {MCP_METHOD_HEADER: method}
        key = _NAME_HEADER_PARAM.get(method)
        if key is not None and isinstance(params.get(key), str):
            headers[MCP_NAME_HEADER] = encode_header_value(params[key])
        if method == "tools/call":
            tool = self.catalog.compiled.get(params.get("name", ""))
            if tool is not None:
                headers.update(tool.param_headers(params.get("arguments")))
        return headers

    # -- catalog -----------------------------------------------------------------------

    async def _read_catalog(self, conn: RpcConnection, kinds: set[str]) -> UpstreamCatalog:
        lists = {k: list(self.catalog.get(k)) for k in _LIST_METHODS}
        for kind in kinds:
            capability = "resources" if kind == "templates" else kind
            if capability not in self.capabilities:
                lists[kind] = []
                continue
            method, key = _LIST_METHODS[kind]
            items: list[dict[str, Any]] = []
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                params: dict[str, Any] = {"cursor": cursor} if cursor else {}
                try:
                    page = await self._request(conn, method, params, CLIENT_CAPS, sink=None, timeout=None)
                except RpcError as exc:
                    if kind == "templates":
                        break  # optional even where resources are offered
                    raise UpstreamError(f"upstream {self.name!r}: {method} failed: {exc.message}") from None
                entries = page.get(key)
                if isinstance(entries, list):
                    items.extend(e for e in entries if isinstance(e, dict) and _has_identity(kind, e))
                next_cursor = page.get("nextCursor")
                if not isinstance(next_cursor, str) or not next_cursor or next_cursor == cursor:
                    break
                cursor = next_cursor
            lists[kind] = items
        compiled = await self._compile(lists["tools"]) if "tools" in kinds else self.catalog.compiled
        return UpstreamCatalog(**lists, compiled=compiled)

    async def _compile(self, tools: list[dict[str, Any]]) -> dict[str, CompiledTool]:
        """Compile each tool once, as its list is read; an invalid schema is logged here, once.
        A tool whose schema has not changed since the last list keeps its compiled form, so
        an upstream announcing list changes often costs a comparison per tool, not a compile."""
        before = self.catalog.compiled
        compiled: dict[str, CompiledTool] = {}
        turn = time.perf_counter()
        for tool in tools:
            name = tool["name"]
            if name in compiled:
                continue
            schema = tool.get("inputSchema")
            text = schema_text(schema)
            kept = before.get(name)
            if kept is not None and kept.compiled_from(text):
                compiled[name] = kept
                continue
            size = len(text) if isinstance(schema, dict) else 0
            if size > THREAD_SCHEMA_BYTES:
                unchecked = f"{size} bytes, more than {MAX_SCHEMA_BYTES}" if size > MAX_SCHEMA_BYTES else None
                compile_one = functools.partial(CompiledTool.compile, tool, text=text, unchecked=unchecked)
                done = await anyio.to_thread.run_sync(compile_one, abandon_on_cancel=True)
                turn = time.perf_counter()
            else:
                done = CompiledTool.compile(tool, text=text)
            compiled[name] = done
            if done.schema_error is not None:
                log.warning(
                    "%s: tool %r has an input schema of %s the gateway compiles; arguments are not checked"
                    if size > MAX_SCHEMA_BYTES
                    else "%s: tool %r has an invalid input schema; arguments are not checked: %s",
                    self.name,
                    name,
                    done.schema_error,
                )
            if time.perf_counter() - turn >= COMPILE_TURN:
                await anyio.lowlevel.checkpoint()
                turn = time.perf_counter()
        return compiled

    async def _refresher(self, conn: RpcConnection) -> None:
        """Re-read the lists an upstream said changed, coalescing bursts of notifications."""
        rested = 0.0  # when the last refresh has been paid for (`perf_counter`)
        while True:
            await self._refresh_wake.wait()
            self._refresh_wake = anyio.Event()
            await anyio.sleep(max(REFRESH_PAUSE, rested - time.perf_counter()))
            kinds, self._dirty = self._dirty, set()
            began = time.perf_counter()
            try:
                self.catalog = await self._read_catalog(conn, kinds)
            except GatewayError as exc:
                log.warning("%s: refreshing %s failed: %s", self.name, ", ".join(sorted(kinds)), exc)
                continue
            finally:
                ended = time.perf_counter()
                rested = ended + (ended - began) * (1 / REFRESH_SHARE - 1)
            await self.events.catalog_changed(self)

    async def _on_notification(self, message: Message) -> None:
        method = message["method"]
        params = jsonrpc.params_of(message)
        kinds = _CHANGED.get(method)
        if kinds is not None:
            self._dirty.update(kinds)
            self._refresh_wake.set()
        elif method == "notifications/resources/updated":
            uri = params.get("uri")
            if isinstance(uri, str):
                try:
                    await self.events.resource_updated(self, uri, params)
                except Exception:  # the clients' side of an event never fails this connection
                    log.exception("%s: relaying a resource update failed", self.name)
        elif method == "notifications/message":
            log.debug("%s: log message with no caller to deliver it to: %s", self.name, params.get("data"))

    async def _health(
        self, conn: RpcConnection, transport: http_client.HttpTransport | stdio_client.StdioTransport
    ) -> None:
        """An idle upstream gives no sign of dying, nor does a stdio child that is alive but
        stuck (stopped, deadlocked): ask it, now and then, and give up on it when it does not
        answer, so its calls fail at once and its tools leave the catalog until it is back."""
        method = "server/discover" if self.modern else "ping"
        while True:
            with anyio.move_on_after(self.config.health_interval):
                await transport.suspect.wait()
            transport.suspect = asyncio.Event()
            try:
                await self._request(conn, method, {}, CLIENT_CAPS, sink=None, timeout=self.config.health_timeout)
            except RpcError:
                continue  # it answered, even if only with an error: it is alive
            except GatewayError as exc:
                transport.break_("health check failed: " + exc.message)
                return

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, uri: str) -> None:
        if uri in self.subscriptions:
            return
        self.subscriptions.add(uri)
        await self._apply_subscription("resources/subscribe", uri)

    async def unsubscribe(self, uri: str) -> None:
        if uri not in self.subscriptions:
            return
        self.subscriptions.discard(uri)
        await self._apply_subscription("resources/unsubscribe", uri)

    async def _apply_subscription(self, method: str, uri: str) -> None:
        conn = self._conn
        if conn is None or self.state != "ready":
            return  # applied on reconnect
        if self.modern:
            self._restart_listen(conn)
        else:
            await self._request(conn, method, {"uri": uri}, CLIENT_CAPS, sink=None, timeout=self.config.timeout)

    async def _resubscribe(self, conn: RpcConnection) -> None:
        if self.modern:
            self._restart_listen(conn)
            return
        for uri in sorted(self.subscriptions):
            try:
                await self._request(
                    conn, "resources/subscribe", {"uri": uri}, CLIENT_CAPS, sink=None, timeout=self.config.timeout
                )
            except GatewayError as exc:
                log.warning("%s: resubscribing to %s failed: %s", self.name, uri, exc)

    def _restart_listen(self, conn: RpcConnection) -> None:
        """At 2026-07-28 change notifications flow on a `subscriptions/listen` stream."""
        if self._listen_scope is not None:
            self._listen_scope.cancel()
        caps = self.capabilities
        wanted: dict[str, Any] = {}
        if caps.get("tools", {}).get("listChanged"):
            wanted["toolsListChanged"] = True
        if caps.get("prompts", {}).get("listChanged"):
            wanted["promptsListChanged"] = True
        resources = caps.get("resources", {})
        if resources.get("listChanged"):
            wanted["resourcesListChanged"] = True
        if resources.get("subscribe") and self.subscriptions:
            wanted["resourceSubscriptions"] = sorted(self.subscriptions)
        if not wanted:
            return
        scope = anyio.CancelScope()
        self._listen_scope = scope

        async def listen() -> None:
            with scope:
                delay = 1.0
                while not conn.closed.is_set():
                    try:
                        await self._request(
                            conn,
                            "subscriptions/listen",
                            {"notifications": wanted},
                            CLIENT_CAPS,
                            sink=None,
                            timeout=None,
                        )
                    except GatewayError as exc:
                        log.debug("%s: listen stream ended: %s", self.name, exc)
                    await anyio.sleep(delay)  # ended without being asked to: listen again
                    delay = min(delay * 2, 30.0)

        assert self._tg is not None
        self._tg.start_soon(listen)

    # -- calls ---------------------------------------------------------------------------------

    async def _request(
        self,
        conn: RpcConnection,
        method: str,
        params: dict[str, Any],
        caps: dict[str, Any],
        *,
        sink: Sink | None,
        timeout: float | None,
        log_level: str | None = None,
        extra: dict[str, str] | None = None,
        traceparent: str | None = None,
    ) -> dict[str, Any]:
        if traceparent is not None:
            # The trace this request belongs to, as MCP carries it (`_meta`) and, over HTTP,
            # as every HTTP server reads it (the W3C header).
            params = {**params, "_meta": {**jsonrpc.meta_of(params), TRACEPARENT: traceparent}}
        if self.modern:
            params = self._envelope(params, caps, log_level)
            headers = self._headers(method, params)
        else:
            meta = jsonrpc.meta_of(params)
            if meta.keys() & ENVELOPE_META_KEYS:
                params = {**params, "_meta": {k: v for k, v in meta.items() if k not in ENVELOPE_META_KEYS}}
            headers = None
        if extra:
            headers = {**(headers or {}), **extra}
        if traceparent is not None and isinstance(self.config, HttpUpstream):
            headers = {**(headers or {}), TRACEPARENT: traceparent}
        return await conn.request(method, params, sink=sink, timeout=timeout, headers=headers)

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        sink: Sink | None = None,
        client_caps: dict[str, Any] | None = None,
        log_level: str | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        traceparent: str | None = None,
    ) -> dict[str, Any]:
        """Forward one request (with `headers` besides the connection's own, over HTTP);
        raises `UpstreamError` when the upstream is not there. `traceparent` (W3C) names the
        span the request is sent from."""
        conn = self._conn
        if conn is None or self.state != "ready":
            detail = f": {self.last_error}" if self.last_error else ""
            raise UpstreamError(
                f"upstream {self.name!r} is {self.state}{detail}",
                {"upstream": self.name, "state": self.state},
            )
        caps = CLIENT_CAPS if client_caps is None else {k: v for k, v in client_caps.items() if k in CLIENT_CAPS}
        extensions = client_caps.get("extensions") if client_caps is not None else None
        if isinstance(extensions, dict) and TASKS_EXTENSION in extensions:
            # The one extension the gateway relays (its tasks are registered and governed).
            caps = {**caps, "extensions": {TASKS_EXTENSION: {}}}
        result = await self._request(
            conn,
            method,
            params,
            caps,
            sink=sink,
            timeout=timeout or self.config.timeout,
            log_level=log_level,
            extra=headers,
            traceparent=traceparent,
        )
        meta = result.get("_meta")
        if isinstance(meta, dict) and SERVER_INFO_META_KEY in meta:
            # Clients talk to the gateway; the upstream's identity stamp is not theirs to see.
            rest = {k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY}
            result = {**result, "_meta": rest} if rest else {k: v for k, v in result.items() if k != "_meta"}
        return result

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "since": self.since,
            "protocol": self.protocol_version or None,
            "server": self.server_info.get("name"),
            "last_error": self.last_error or None,
            "restarts": self.restarts,
            "tools": len(self.catalog.tools),
            "in_flight": self._conn.in_flight if self._conn is not None else 0,
            "pid": self._transport.process.pid if isinstance(self._transport, stdio_client.StdioTransport) else None,
        }


def describe(exc: BaseException) -> str:
    if isinstance(exc, GatewayError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _root_cause(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _has_identity(kind: str, entry: dict[str, Any]) -> bool:
    key = {"resources": "uri", "templates": "uriTemplate"}.get(kind, "name")
    return isinstance(entry.get(key), str)
