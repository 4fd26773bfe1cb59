"""The server side of the gateway: every MCP method a client can send, answered from the
merged catalog or forwarded to the upstream that owns the name.

Both downstream transports (Streamable HTTP and stdio) hand each request to
`Router.handle` as a `Call` and write back what it returns or raises. Upstream events
(catalog changes, resource updates) come back through the `Events` interface and are
fanned out to the clients that asked for them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .. import __version__, jsonrpc
from ..errors import INVALID_PARAMS, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND, Denied, GatewayError, ProtocolError
from ..governance import Answered, Governance, Ticket
from ..jsonrpc import Message
from ..policy.model import Target
from . import bridge
from .catalog import Catalog, exposed_uri
from .schemas import argument_problem
from .session import HANDSHAKE_VERSIONS, LOG_LEVELS, Call, Session
from .upstream import SERVER_INFO, Events, Upstream

log = logging.getLogger(__name__)

LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]
SERVER_IDENTITY = {"name": "mcp-gateway", "title": "MCP Gateway", "version": __version__}
CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "logging": {},
    "completions": {},
}
_LIST_CHANGED = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
    "resources": "notifications/resources/list_changed",
    "templates": "notifications/resources/list_changed",
}
_HANDSHAKE_ONLY = frozenset({"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})
_MODERN_ONLY = frozenset({"server/discover"})
_TARGET_KIND: dict[str, Any] = {"tools": "tool", "prompts": "prompt", "resources": "resource", "templates": "resource"}
_LISTEN_FLAG = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}

Handler = Callable[[Call], Awaitable[dict[str, Any]]]


SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"


@dataclass(eq=False)
class Listener:
    """A 2026-07-28 `subscriptions/listen` stream: what it wants, and where to send it."""

    principal_id: str
    wants: dict[str, Any]
    send: Callable[[Message], Awaitable[None]]
    subscription_id: Any = None
    """The id of the client's listen request: every frame on the stream carries it."""

    async def deliver(self, message: Message) -> None:
        params = jsonrpc.params_of(message)
        meta = {**jsonrpc.meta_of(params), SUBSCRIPTION_ID: self.subscription_id}
        await self.send({**message, "params": {**params, "_meta": meta}})


class Router(Events):
    """Answers client requests; relays upstream events to clients."""

    def __init__(
        self,
        upstreams: dict[str, Upstream],
        governance: Governance,
        tg: TaskGroup,
        instructions: str | None = None,
        max_parked_per_principal: int = bridge.MAX_PARKED_PER_PRINCIPAL,
        seal_key: bytes | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.governance = governance
        self.catalog = Catalog(upstreams.values())
        self.sessions: set[Session] = set()
        self.listeners: set[Listener] = set()
        self.parking = bridge.Parking(tg, governance, max_parked_per_principal)
        self.seal = bridge.Seal(seal_key)
        self._instructions = instructions
        self._subscribers: dict[str, set[Session]] = {}
        self._handlers: dict[str, Handler] = {
            "initialize": self._initialize,
            "server/discover": self._discover,
            "ping": self._ping,
            "tools/list": self._list("tools", "tools"),
            "prompts/list": self._list("prompts", "prompts"),
            "resources/list": self._list("resources", "resources"),
            "resources/templates/list": self._list("templates", "resourceTemplates"),
            "tools/call": self._call_tool,
            "prompts/get": self._get_prompt,
            "resources/read": self._read_resource,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "completion/complete": self._complete,
            "logging/setLevel": self._set_level,
        }

    # -- entry points ------------------------------------------------------------------

    async def handle(self, call: Call) -> dict[str, Any]:
        """Serve one request; the result is shaped for the client's protocol revision."""
        handler = self._handlers.get(call.method)
        if handler is None or call.method in (_HANDSHAKE_ONLY if call.modern else _MODERN_ONLY):
            raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {call.method}")
        result = await handler(call)
        return self._finish(call, result)

    async def notify(self, session: Session, message: Message) -> None:
        """A notification from a client."""
        method = message["method"]
        if method == "notifications/cancelled":
            # A notification gets no answer, so a malformed one is dropped, not refused.
            request_id = jsonrpc.params_of(message).get("requestId")
            scope = session.calls.get(request_id) if jsonrpc.is_request_id(request_id) else None
            if scope is not None:
                scope.cancel()
        # roots/list_changed: upstream connections are shared, so one client's roots are
        # not announced to servers; an upstream that needs roots asks for them mid-call.

    def instructions(self) -> str | None:
        if self._instructions is not None:
            return self._instructions
        parts = [f"## {u.name}\n{u.instructions}" for u in self.upstreams.values() if u.instructions]
        return "\n\n".join(parts) or None

    def _finish(self, call: Call, result: dict[str, Any]) -> dict[str, Any]:
        """Shape a result for the client's revision and put the gateway's name on it."""
        if call.modern:
            result.setdefault("resultType", "complete")
            meta = result.get("_meta")
            result["_meta"] = (
                {**meta, SERVER_INFO: SERVER_IDENTITY} if isinstance(meta, dict) else {SERVER_INFO: SERVER_IDENTITY}
            )
            if call.method.endswith("/list") or call.method in ("resources/read", "server/discover"):
                result.setdefault("ttlMs", 0)
                # What a client may see depends on who it is: never shareable between callers.
                result["cacheScope"] = "private"
        else:
            for key in ("resultType", "ttlMs", "cacheScope"):
                result.pop(key, None)
        return result

    # -- lifecycle -----------------------------------------------------------------------

    async def _initialize(self, call: Call) -> dict[str, Any]:
        params = call.params
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
        session = call.session
        session.protocol_version = version
        caps = params.get("capabilities")
        session.client_capabilities = caps if isinstance(caps, dict) else {}
        info = params.get("clientInfo")
        session.client_info = info if isinstance(info, dict) else {}
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": SERVER_IDENTITY,
        }
        instructions = self.instructions()
        if instructions:
            result["instructions"] = instructions
        return result

    async def _discover(self, call: Call) -> dict[str, Any]:
        capabilities = {k: v for k, v in CAPABILITIES.items() if k != "logging"}
        result: dict[str, Any] = {"supportedVersions": ["2026-07-28"], "capabilities": capabilities}
        instructions = self.instructions()
        if instructions:
            result["instructions"] = instructions
        return result

    async def _ping(self, call: Call) -> dict[str, Any]:
        return {}

    async def _set_level(self, call: Call) -> dict[str, Any]:
        level = call.params.get("level")
        if level not in LOG_LEVELS:
            raise ProtocolError(INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}")
        call.session.log_level = level
        return {}

    # -- listing ---------------------------------------------------------------------------

    def _list(self, kind: str, key: str) -> Handler:
        async def handler(call: Call) -> dict[str, Any]:
            return {key: self.visible(call, kind)}

        return handler

    def visible(self, call: Call, kind: str) -> list[dict[str, Any]]:
        """What this caller may see: exactly what it may use."""
        principal, gov = call.principal, self.governance
        target_kind = _TARGET_KIND[kind]
        return [
            exposed
            for upstream, original, exposed in self.catalog.snapshot.entries(kind)
            if gov.visible(principal, Target(upstream.name, target_kind, original))
        ]

    async def _governed(
        self,
        call: Call,
        upstream: Upstream,
        target: Target,
        method: str,
        params: dict[str, Any],
        arguments: dict[str, Any] | None = None,
        check: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Decide, audit, then forward under the kill switch's watch. `check` runs once the
        decision is on record, before anything is forwarded (it raises `Answered` to stop)."""
        # A resume of a parked call is its next leg: decided again on what the upstream is
        # running, under its call id.
        parked = self.parking.claim(call, target) if call.modern and not upstream.modern else None
        call_id: str | None
        if parked is not None:
            arguments, call_id = parked.arguments, parked.call_id
        else:
            call_id = self.seal.claim(call, target) if call.modern and upstream.modern else None
        try:
            return await self.governance.call(
                call.principal,
                target,
                method,
                arguments,
                lambda ticket: self._checked_forward(call, upstream, method, params, ticket, check),
                call_id=call_id,
            )
        except Denied as exc:
            if parked is not None:
                self.parking.refuse(parked, exc)
            raise

    # -- forwarding --------------------------------------------------------------------------

    async def _checked_forward(
        self,
        call: Call,
        upstream: Upstream,
        method: str,
        params: dict[str, Any],
        ticket: Ticket,
        check: Callable[[], None] | None,
    ) -> dict[str, Any]:
        if check is not None:
            check()
        return await self._forward(call, upstream, method, params, ticket)

    async def _forward(
        self, call: Call, upstream: Upstream, method: str, params: dict[str, Any], ticket: Ticket
    ) -> dict[str, Any]:
        """Send a request upstream on behalf of `call`, bridging what the upstream asks of the client."""
        log_level = call.log_level if call.modern else (call.session.log_level or "debug")
        caps = call.client_capabilities

        async def send(sink: Any, params: dict[str, Any]) -> dict[str, Any]:
            return await upstream.call(method, params, sink=sink, client_caps=caps, log_level=log_level)

        if call.modern and not upstream.modern:
            if bridge.Parking.owns(params):
                return await self.parking.resume(call, ticket)
            return await self.parking.start(call, ticket, lambda sink: send(sink, params))
        sink = bridge.CallSink(call)
        if call.modern:
            if "requestState" in params:
                params = self.seal.unseal(params, ticket)
            result = await send(sink, params)
            if bridge.is_input_required(result) and "requestState" in result:
                result["requestState"] = self.seal.wrap(result["requestState"], ticket)
            return result
        for _ in range(bridge.MAX_ROUNDS):
            result = await send(sink, params)
            if not bridge.is_input_required(result):
                return result
            params = {**params, **await bridge.fulfil(call, result)}
        raise ProtocolError(INVALID_PARAMS, f"upstream {upstream.name!r} kept asking for input; giving up")

    async def _call_tool(self, call: Call) -> dict[str, Any]:
        name = call.params.get("name")
        arguments = call.params.get("arguments")
        entry = self.catalog.tool(name) if isinstance(name, str) else None
        if entry is None:
            await self.governance.refuse_unknown(
                call.principal, "tool", name, "tools/call", arguments if isinstance(arguments, dict) else None
            )
            if not isinstance(name, str):
                raise ProtocolError(INVALID_PARAMS, "tools/call needs a tool name")
            raise ProtocolError(INVALID_PARAMS, f"Unknown tool: {name}")
        target = Target(entry.upstream.name, "tool", entry.original)
        decided = arguments if isinstance(arguments, dict) else None
        params = {**call.params, "name": entry.original}

        def check() -> None:
            # Checked only once decided and audited: a probe with bad arguments is on record.
            if arguments is not None and not isinstance(arguments, dict):
                raise Answered(
                    "tool_error",
                    "invalid arguments: not an object",
                    error=ProtocolError(INVALID_PARAMS, "tool arguments must be an object"),
                )
            problem = argument_problem(entry.exposed, arguments or {})
            if problem is not None:
                # A tool-level error the model can read and correct (spec 2025-11-25).
                text = f"Invalid arguments for {name}: {problem}"
                result = {"content": [{"type": "text", "text": text}], "isError": True}
                raise Answered("tool_error", f"invalid arguments: {problem}", result=result)

        result = await self._governed(call, entry.upstream, target, "tools/call", params, decided or {}, check)
        return _map_content_uris(entry.upstream, result)

    async def _get_prompt(self, call: Call) -> dict[str, Any]:
        name = call.params.get("name")
        entry = self.catalog.prompt(name) if isinstance(name, str) else None
        if entry is None:
            await self.governance.refuse_unknown(call.principal, "prompt", name, "prompts/get")
            raise ProtocolError(INVALID_PARAMS, f"Unknown prompt: {name}")
        target = Target(entry.upstream.name, "prompt", entry.original)
        params = {**call.params, "name": entry.original}
        result = await self._governed(call, entry.upstream, target, "prompts/get", params)
        messages = result.get("messages")
        if entry.upstream.namespace and isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict) and isinstance(message.get("content"), dict):
                    message["content"] = _map_block(entry.upstream, message["content"])
        return result

    def _route_uri(self, params: dict[str, Any]) -> tuple[Upstream, str, str]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise ProtocolError(INVALID_PARAMS, "a resource request needs a uri")
        route = self.catalog.route_uri(uri)
        if route is None:
            raise ProtocolError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
        return route[0], route[1], uri

    async def _read_resource(self, call: Call) -> dict[str, Any]:
        try:
            upstream, original, _ = self._route_uri(call.params)
        except ProtocolError:
            await self.governance.refuse_unknown(call.principal, "resource", call.params.get("uri"), "resources/read")
            raise
        target = Target(upstream.name, "resource", original)
        result = await self._governed(call, upstream, target, "resources/read", {**call.params, "uri": original})
        contents = result.get("contents")
        if upstream.namespace and isinstance(contents, list):
            for item in contents:
                if isinstance(item, dict) and isinstance(item.get("uri"), str):
                    item["uri"] = exposed_uri(upstream, item["uri"])
        return result

    async def _subscribe(self, call: Call) -> dict[str, Any]:
        upstream, original, uri = self._route_uri(call.params)
        await self.governance.admit(
            call.principal, Target(upstream.name, "resource", original), "resources/subscribe", None
        )
        subscribers = self._subscribers.setdefault(uri, set())
        subscribers.add(call.session)
        call.session.subscriptions.add(uri)
        await upstream.subscribe(original)
        return {}

    async def _unsubscribe(self, call: Call) -> dict[str, Any]:
        _, _, uri = self._route_uri(call.params)
        await self._drop_subscriber(call.session, uri)
        return {}

    async def _drop_subscriber(self, session: Session, uri: str) -> None:
        """`session` no longer follows `uri`; the upstream stops sending it when nobody does."""
        session.subscriptions.discard(uri)
        subscribers = self._subscribers.get(uri)
        if subscribers is None:
            return
        subscribers.discard(session)
        if subscribers:
            return
        del self._subscribers[uri]
        if any(uri in (lst.wants.get("resourceSubscriptions") or ()) for lst in self.listeners):
            return
        route = self.catalog.route_uri(uri)
        if route is not None:
            await route[0].unsubscribe(route[1])

    async def _complete(self, call: Call) -> dict[str, Any]:
        ref = call.params.get("ref")
        kind = ref.get("type") if isinstance(ref, dict) else None
        if not isinstance(ref, dict) or kind not in ("ref/prompt", "ref/resource"):
            await self.governance.refuse_unknown(call.principal, "prompt", None, "completion/complete")
            if not isinstance(ref, dict):
                raise ProtocolError(INVALID_PARAMS, "completion/complete needs a ref")
            raise ProtocolError(INVALID_PARAMS, "ref.type must be ref/prompt or ref/resource")
        if kind == "ref/prompt":
            name = ref.get("name")
            entry = self.catalog.prompt(name) if isinstance(name, str) else None
            if entry is None:
                await self.governance.refuse_unknown(call.principal, "prompt", name, "completion/complete")
                raise ProtocolError(INVALID_PARAMS, f"Unknown prompt: {name}")
            upstream, mapped = entry.upstream, {**ref, "name": entry.original}
            target = Target(upstream.name, "prompt", entry.original)
        else:
            uri = ref.get("uri")
            route = (self.catalog.route_template(uri) or self.catalog.route_uri(uri)) if isinstance(uri, str) else None
            if route is None:
                await self.governance.refuse_unknown(call.principal, "resource", uri, "completion/complete")
                raise ProtocolError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
            upstream, mapped = route[0], {**ref, "uri": route[1]}
            target = Target(upstream.name, "resource", route[1])
        params = {**call.params, "ref": mapped}
        return await self._governed(call, upstream, target, "completion/complete", params)

    # -- sessions and events ------------------------------------------------------------------

    def open_session(self, session: Session) -> None:
        self.sessions.add(session)

    async def close_session(self, session: Session) -> None:
        self.sessions.discard(session)
        for scope in session.calls.values():
            scope.cancel()
        for uri in list(session.subscriptions):
            await self._drop_subscriber(session, uri)

    async def listen(self, listener: Listener) -> None:
        """Register a 2026-07-28 listen stream and subscribe upstream to what it names."""
        for uri in listener.wants.get("resourceSubscriptions") or ():
            if isinstance(uri, str) and (route := self.catalog.route_uri(uri)) is not None:
                await route[0].subscribe(route[1])
        self.listeners.add(listener)  # after routing: a refused URI (route_uri raises) registers nothing

    def unlisten(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    async def catalog_changed(self, upstream: Upstream) -> None:
        changed = self.catalog.rebuild()
        for method in sorted({_LIST_CHANGED[kind] for kind in changed}):
            await self.broadcast(jsonrpc.notification(method))

    async def broadcast(self, message: Message) -> None:
        """Send a list-changed notification to every client that can receive one."""
        flag = _LISTEN_FLAG.get(message["method"])
        for session in list(self.sessions):
            await _deliver(session.send(message))
        for listener in list(self.listeners):
            if flag is not None and listener.wants.get(flag):
                await _deliver(listener.deliver(message))

    async def resource_updated(self, upstream: Upstream, uri: str, params: dict[str, Any]) -> None:
        gateway_uri = exposed_uri(upstream, uri)
        # The upstream's `_meta` names its stream to the gateway, not anything of the client's.
        fields = {k: v for k, v in params.items() if k != "_meta"}
        message = jsonrpc.notification("notifications/resources/updated", {**fields, "uri": gateway_uri})
        target = Target(upstream.name, "resource", uri)
        for session in list(self._subscribers.get(gateway_uri, ())):
            if self.governance.visible(session.principal, target):
                await _deliver(session.send(message))
        for listener in list(self.listeners):
            if gateway_uri in (listener.wants.get("resourceSubscriptions") or ()):
                await _deliver(listener.deliver(message))

    async def policy_changed(self) -> None:
        """What clients may see changed: tell every client to list again."""
        for method in (
            "notifications/tools/list_changed",
            "notifications/prompts/list_changed",
            "notifications/resources/list_changed",
        ):
            await self.broadcast(jsonrpc.notification(method))


async def _deliver(sending: Awaitable[Any]) -> None:
    """One client's broken stream must not stop the others' notifications."""
    try:
        with anyio.move_on_after(5):
            await sending
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, GatewayError, OSError) as exc:
        log.debug("dropped a notification: %s", exc)


def _map_block(upstream: Upstream, block: dict[str, Any]) -> dict[str, Any]:
    """Give a content block's resource URI its gateway name, so a client can read it back."""
    kind = block.get("type")
    if kind == "resource_link" and isinstance(block.get("uri"), str):
        return {**block, "uri": exposed_uri(upstream, block["uri"])}
    if kind == "resource" and isinstance(block.get("resource"), dict):
        resource = block["resource"]
        if isinstance(resource.get("uri"), str):
            return {**block, "resource": {**resource, "uri": exposed_uri(upstream, resource["uri"])}}
    return block


def _map_content_uris(upstream: Upstream, result: dict[str, Any]) -> dict[str, Any]:
    content = result.get("content")
    if upstream.namespace and isinstance(content, list):
        result["content"] = [_map_block(upstream, b) if isinstance(b, dict) else b for b in content]
    return result
