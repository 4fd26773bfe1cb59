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
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from .. import __version__, jsonrpc
from ..errors import Denied, GatewayError, ProtocolError, UpstreamError
from ..governance import Answered, Governance, Ticket
from ..identity import Principal
from ..jsonrpc import Message
from ..killswitch import Ending, Opened
from ..limits import LimitReached, Limits
from ..oauth.assertion import IdentitySigner
from ..policy_model import Kind, Target
from ..protocol import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    INVALID_PARAMS,
    LATEST_HANDSHAKE_VERSION,
    METHOD_NOT_FOUND,
    MODERN_PROTOCOL_VERSIONS,
    RESOURCE_NOT_FOUND,
    SERVER_INFO_META_KEY,
    SUBSCRIPTION_ID_META_KEY,
    TASKS_EXTENSION,
)
from . import bridge, payload
from .catalog import Catalog, exposed_uri
from .relay_tasks import (
    HANDSHAKE_CAPABILITY,
    HANDSHAKE_TASK_METHODS,
    TASKS_CAPS,
    TaskRegistry,
    declares_tasks,
    is_task,
)
from .session import LOG_LEVELS, Call, Session, held_capabilities, held_client_info
from .subscriptions import RESOURCES, Subscriptions, listen_filter
from .task_methods import TaskMethods
from .upstream import Events, Upstream

log = logging.getLogger(__name__)

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
_HANDSHAKE_ONLY = (
    frozenset({"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})
    | HANDSHAKE_TASK_METHODS
)
_MODERN_ONLY = frozenset({"server/discover", "tasks/update"})
_TARGET_KIND: dict[str, Any] = {"tools": "tool", "prompts": "prompt", "resources": "resource", "templates": "resource"}
_LISTEN_FLAG = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}

MethodHandler = Callable[[Call], Awaitable[dict[str, Any]]]


@dataclass(eq=False)
class Listener:
    """A 2026-07-28 `subscriptions/listen` stream: what it wants, and where to send it.

    Delivery never waits: frames go into the stream's bounded buffer, and a client too
    slow to drain it has its stream ended (it can listen again) rather than holding up
    the upstream connection the event came from.
    """

    principal: Principal
    wants: dict[str, Any]
    outbox: MemoryObjectSendStream[Message]
    subscription_id: Any = None
    """The id of the client's listen request: every frame on the stream carries it."""
    tickets: dict[str, Ticket] = field(default_factory=dict)
    """The admitted resource subscriptions (gateway URI -> its audited decision)."""
    opened: Opened | None = None
    on_end: Callable[[], None] | None = None
    """Set by the transport: stops the stream's relay at once (a kill does not wait for it)."""

    def deliver(self, message: Message) -> bool:
        """Queue one frame; False when the stream is gone or was ended for falling behind."""
        params = jsonrpc.params_of(message)
        meta = {**jsonrpc.meta_of(params), SUBSCRIPTION_ID_META_KEY: self.subscription_id}
        try:
            self.outbox.send_nowait({**message, "params": {**params, "_meta": meta}})
        except anyio.WouldBlock:
            log.warning("listen stream of %s is not keeping up: ended", self.principal.id)
            self.end()
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    def end(self) -> None:
        self.outbox.close()
        if self.on_end is not None:
            self.on_end()


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
        max_tasks_per_principal: int = 32,
        task_record_ttl: float = 3600.0,
    ) -> None:
        self.upstreams = upstreams
        self.governance = governance
        self.catalog = Catalog(upstreams.values())
        self.sessions: set[Session] = set()
        self.listeners: set[Listener] = set()
        self.parking = bridge.Parking(tg, governance, max_parked_per_principal)
        self.seal = bridge.Seal(seal_key)
        self.tasks = TaskRegistry(governance, tg, max_tasks_per_principal, task_record_ttl)
        task_methods = TaskMethods(self.tasks, governance, self._governed, _map_content_uris)
        self.limits = Limits()
        self.identity: IdentitySigner | None = None
        """Signs the caller's identity for upstreams with an `identity_header`."""
        self.subscriptions = Subscriptions()
        self._tg = tg
        self._instructions = instructions
        self._opened: dict[Session, Opened] = {}
        self._handlers: dict[str, MethodHandler] = {
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
            "tasks/get": task_methods.request,
            "tasks/update": task_methods.request,
            "tasks/cancel": task_methods.request,
            "tasks/result": task_methods.request,
            "tasks/list": task_methods.list,
        }

    # -- entry points ------------------------------------------------------------------

    async def handle(self, call: Call) -> dict[str, Any]:
        """Serve one request; the result is shaped for the client's protocol revision."""
        observer = self.governance.observer
        principal = call.session.principal
        observation = observer.begin(call.method, principal.id, principal.team, call.params, call.traceparent)
        error: BaseException | None = None
        try:
            handler = self._handlers.get(call.method)
            if handler is None or call.method in (_HANDSHAKE_ONLY if call.modern else _MODERN_ONLY):
                raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {call.method}")
            result = await handler(call)
            return self._finish(call, result)
        except BaseException as exc:
            error = exc
            raise
        finally:
            observer.end(observation, error)

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
                {**meta, SERVER_INFO_META_KEY: SERVER_IDENTITY}
                if isinstance(meta, dict)
                else {SERVER_INFO_META_KEY: SERVER_IDENTITY}
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

    async def refuse_rejected(self, principal: Principal, message: Message, reason: str) -> None:
        """Audit a request the protocol's inbound checks refused before it was decided (at
        2026-07-28: `Mcp-*` headers that disagree with the body, a missing or bad envelope),
        when it names a tool, prompt or resource: a probe sent malformed is on record like
        any other refusal (a denial with no rule). Nothing of it was decided or forwarded.
        A listen names no single target and is refused whole: it has no row."""
        method = message.get("method")
        params = jsonrpc.params_of(message)
        kind: Kind
        if method == "completion/complete":
            raw = params.get("ref")
            ref: dict[str, Any] = raw if isinstance(raw, dict) else {}
            if ref.get("type") == "ref/prompt":
                kind, name = "prompt", ref.get("name")
            else:
                kind, name = "resource", ref.get("uri")
        elif method in _NAMED:
            kind, name = _NAMED[method][0], params.get(_NAMED[method][1])
        else:
            return
        arguments = params.get("arguments") if method == "tools/call" else None
        await self.governance.refuse_unknown(
            principal,
            kind,
            name,
            str(method),
            arguments if isinstance(arguments, dict) else None,
            reason=f"refused before a decision: {reason}",
        )

    async def _initialize(self, call: Call) -> dict[str, Any]:
        params = call.params
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        session = call.session
        session.protocol_version = version
        session.client_capabilities = held_capabilities(params.get("capabilities"))
        session.client_info = held_client_info(params.get("clientInfo"))
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": {**CAPABILITIES, "tasks": HANDSHAKE_CAPABILITY},
            "serverInfo": SERVER_IDENTITY,
        }
        instructions = self.instructions()
        if instructions:
            result["instructions"] = instructions
        return result

    async def _discover(self, call: Call) -> dict[str, Any]:
        capabilities = {k: v for k, v in CAPABILITIES.items() if k != "logging"}
        # Tasks are relayed to 2026-07-28 clients only (the extension's revision).
        capabilities["extensions"] = {TASKS_EXTENSION: {}}
        result: dict[str, Any] = {"supportedVersions": list(MODERN_PROTOCOL_VERSIONS), "capabilities": capabilities}
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

    def _list(self, kind: str, key: str) -> MethodHandler:
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

    def _identity_header(self, upstream: Upstream, principal: Principal) -> dict[str, str] | None:
        """The caller's identity, signed by the gateway, for an upstream that names a header for it."""
        name = getattr(upstream.config, "identity_header", None)
        if name is None or self.identity is None:
            return None
        return {name.lower(): self.identity.sign(principal, upstream.name)}

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
        if not call.modern:
            # A handshake-era client gets a task only when it asks for one (`params.task`); the
            # gateway then asks the upstream as a 2026-07-28 client would, and translates.
            caps = {k: v for k, v in caps.items() if k != "extensions"}
            if method == "tools/call" and "task" in params:
                caps = {**caps, **TASKS_CAPS}
                params = {k: v for k, v in params.items() if k != "task"}
        observer = self.governance.observer
        # Only a call that asked for a task held a place for one (`TaskRegistry.reserve`, what
        # bounds a principal's running tasks): a task the upstream made of any other call is
        # not taken over.
        asked_task = declares_tasks(call.client_capabilities) if call.modern else "task" in call.params

        identity = self._identity_header(upstream, call.principal)

        async def send(sink: Any, params: dict[str, Any]) -> dict[str, Any]:
            with observer.upstream(upstream.name, method) as sent:
                return await upstream.call(
                    method,
                    params,
                    sink=sink,
                    client_caps=caps,
                    log_level=log_level,
                    headers=identity,
                    traceparent=sent.traceparent,
                )

        if call.modern and not upstream.modern:
            if bridge.Parking.owns(params):
                return await self.parking.resume(call, ticket)
            return await self.parking.start(call, ticket, lambda sink: send(sink, params))
        lease = payload.current()
        if lease is not None and method == "tools/call":
            lease.splice = True  # its answer goes straight to this client's writer: a large one may stay raw
        sink = bridge.CallSink(call)
        if call.modern:
            if "requestState" in params:
                params = self.seal.unseal(params, ticket)
            result = await send(sink, params)
            if bridge.is_input_required(result):
                result = payload.materialize(result)
                if "requestState" in result:
                    result["requestState"] = self.seal.wrap(result["requestState"], ticket)
            if (created := _created_task(method, result)) is not None:
                self._unasked(upstream, created, asked_task)
                return {**created, "taskId": self.tasks.register(upstream, ticket, created).id}
            return result
        for _ in range(bridge.MAX_ROUNDS):
            result = await send(sink, params)
            if (created := _created_task(method, result)) is not None:
                self._unasked(upstream, created, asked_task)
                session = None if call.session.ephemeral else call.session
                return {"task": self.tasks.register(upstream, ticket, created, session).handshake()}
            if not bridge.is_input_required(result):
                return result
            params = {**params, **await bridge.fulfil(call, payload.materialize(result))}
        raise ProtocolError(INVALID_PARAMS, f"upstream {upstream.name!r} kept asking for input; giving up")

    def _unasked(self, upstream: Upstream, created: dict[str, Any], asked: bool) -> None:
        """Refuse a task an upstream made of a call that did not ask for one (and cancel it there)."""
        if asked:
            return
        self.tasks.abandon(upstream, created["taskId"])
        raise UpstreamError(
            f"upstream {upstream.name!r} answered with a task the client did not ask for", {"upstream": upstream.name}
        )

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

        reserved = False

        def check() -> None:
            nonlocal reserved
            # Checked only once decided and audited: a probe with bad arguments is on record.
            asks_task = "task" in call.params and not call.modern
            if asks_task and not entry.upstream.modern:
                # Tasks are relayed over the 2026-07-28 extension only (governed end to end).
                # Refused, not stripped: the client asked for something else than a plain call.
                raise Answered(
                    "refused",
                    "task-augmented call",
                    error=ProtocolError(
                        INVALID_PARAMS, f"task-augmented tools/call is not relayed to upstream {entry.upstream.name!r}"
                    ),
                )
            if arguments is not None and not isinstance(arguments, dict):
                raise Answered(
                    "tool_error",
                    "invalid arguments: not an object",
                    error=ProtocolError(INVALID_PARAMS, "tool arguments must be an object"),
                )
            problem = entry.tool.argument_problem(arguments or {})
            if problem is not None:
                # A tool-level error the model can read and correct (spec 2025-11-25).
                text = f"Invalid arguments for {name}: {problem}"
                result = {"content": [{"type": "text", "text": text}], "isError": True}
                raise Answered("tool_error", f"invalid arguments: {problem}", result=result)
            if asks_task or (call.modern and declares_tasks(call.client_capabilities)):
                # The upstream may answer with a task: a place for it is held before it goes.
                try:
                    self.tasks.reserve(call.principal)
                except LimitReached as exc:
                    raise Answered("refused", exc.message, error=exc) from None
                reserved = True

        try:
            result = await self._governed(call, entry.upstream, target, "tools/call", params, decided or {}, check)
        finally:
            if reserved:
                self.tasks.release(call.principal)
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
        uri = call.params.get("uri")
        if not isinstance(uri, str):
            raise ProtocolError(INVALID_PARAMS, "a resource request needs a uri")
        principal = call.principal
        if uri not in call.session.subscriptions and self.subscriptions.count(principal.id) >= (
            cap := self.limits.subscriptions_per_principal
        ):
            raise LimitReached("max_subscriptions_per_principal", cap, "resource subscriptions")
        route, ticket = await self._admit_subscription(principal, uri, "resources/subscribe")
        uri = exposed_uri(*route)  # held under the gateway's spelling, as its updates arrive
        # Decided again with no await before the add: a switch, a policy change or a
        # revocation may have come during the audit wait.
        refusal = self.governance.refusal(principal, Target(route[0].name, "resource", route[1]))
        if refusal is not None:
            killed = (refusal.data or {}).get("reason") == "kill_switch"
            self.governance.finish(ticket, "killed" if killed else "refused", refusal.message)
            raise refusal
        if uri not in call.session.subscriptions and self.subscriptions.count(principal.id) >= cap:
            # Checked again with no await before the add: concurrent subscribes cannot overshoot.
            self.governance.finish(ticket, "cancelled", "over max_subscriptions_per_principal")
            raise LimitReached("max_subscriptions_per_principal", cap, "resource subscriptions")
        call.session.subscriptions.add(uri)
        try:
            if self.subscriptions.add(call.session, principal.id, uri, route):
                await route[0].subscribe(route[1])
        except GatewayError as exc:
            self.governance.finish(ticket, "upstream_error", exc.message)
            self._release(call.session, principal, [uri])
            raise
        self.governance.finish(ticket, "ok")
        return {}

    async def _unsubscribe(self, call: Call) -> dict[str, Any]:
        uri = call.params.get("uri")
        if not isinstance(uri, str):
            raise ProtocolError(INVALID_PARAMS, "a resource request needs a uri")
        try:
            route = self.catalog.route_uri(uri)
        except ProtocolError:
            route = None  # nothing was subscribed under a URI with no single reading
        self._release(call.session, call.principal, [exposed_uri(*route) if route is not None else uri])
        return {}

    async def _admit_subscription(
        self, principal: Principal, uri: str, method: str
    ) -> tuple[tuple[Upstream, str], Ticket]:
        """Decide and audit following `uri`, like any other request for it; a URI no
        upstream serves is refused after its decision is recorded (probing is visible), and
        nothing is sent upstream for it."""
        try:
            route = self.catalog.route_uri(uri)
        except ProtocolError:  # a URI with no single reading: refused, and on record like any probe
            await self.governance.refuse_unknown(principal, "resource", uri, method)
            raise
        target = Target(route[0].name, "resource", route[1]) if route is not None else Target("", "resource", uri)
        ticket = await self.governance.admit(principal, target, method, None)
        if route is None or not self._known(uri):
            self.governance.finish(ticket, "not_found", "no upstream lists this resource or a template for it")
            raise ProtocolError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
        return route, ticket

    def _known(self, uri: str) -> bool:
        """Whether an upstream lists `uri`, or a template of its that matches it."""
        snap = self.catalog.snapshot
        return uri in snap.resources or any(t.pattern.match(uri) for t in snap.templates)

    def _release(self, holder: Session | Listener, principal: Principal, uris: Any) -> None:
        """`holder` lets go of `uris`; an upstream subscription nobody holds any more ends
        (in the background: this runs where the caller may already be cancelled)."""
        routes = []
        for uri in list(uris):
            if isinstance(holder, Session):
                holder.subscriptions.discard(uri)
            route = self.subscriptions.remove(holder, principal.id, uri)
            if route is not None:
                routes.append((uri, route))
        if routes:
            self._tg.start_soon(self._unsubscribe_upstream, routes)

    async def _unsubscribe_upstream(self, routes: list[tuple[str, tuple[Upstream, str]]]) -> None:
        for uri, (upstream, original) in routes:
            if self.subscriptions.holders(uri):
                continue  # someone followed it again meanwhile
            try:
                await upstream.unsubscribe(original)
            except GatewayError as exc:
                log.warning("%s: unsubscribing from %s failed: %s", upstream.name, original, exc)

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
            try:
                route = (
                    (self.catalog.route_template(uri) or self.catalog.route_uri(uri)) if isinstance(uri, str) else None
                )
            except ProtocolError:  # no single reading: refused, and on record like any probe
                await self.governance.refuse_unknown(call.principal, "resource", uri, "completion/complete")
                raise
            if route is None:
                await self.governance.refuse_unknown(call.principal, "resource", uri, "completion/complete")
                raise ProtocolError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
            upstream, mapped = route[0], {**ref, "uri": route[1]}
            target = Target(upstream.name, "resource", route[1])
        params = {**call.params, "ref": mapped}
        return await self._governed(call, upstream, target, "completion/complete", params)

    # -- sessions and events ------------------------------------------------------------------

    def open_session(self, session: Session, close: Callable[[], None] | None = None) -> None:
        """Register a lasting session; `close` ends it (the transport's), for revocation."""
        self.sessions.add(session)

        def end(how: Ending) -> None:
            self._release(session, session.principal, session.subscriptions)
            if how == "revoked" and close is not None:
                close()

        self._opened[session] = self.governance.inflight.open(session.principal, "session", end)

    async def close_session(self, session: Session) -> None:
        self.sessions.discard(session)
        opened = self._opened.pop(session, None)
        if opened is not None:
            self.governance.inflight.close(opened)
        for scope in session.calls.values():
            scope.cancel()
        self._release(session, session.principal, session.subscriptions)

    async def listen(self, call: Call, outbox: MemoryObjectSendStream[Message]) -> Listener:
        """Admit a 2026-07-28 listen stream and register it. Nothing is registered unless
        all of it is admitted: the filter is checked, every named resource is decided and
        audited like `resources/subscribe` (one denied refuses the whole listen, as a
        subscribe would be refused), and the principal's stream and subscription limits hold."""
        try:
            wants = listen_filter(call.params.get("notifications"))
        except ValueError as exc:
            raise ProtocolError(INVALID_PARAMS, str(exc)) from None
        principal, governance = call.principal, self.governance
        self.may_open_stream(principal)
        uris: list[str] = wants.get(RESOURCES, [])
        if self.subscriptions.count(principal.id) + len(uris) > (cap := self.limits.subscriptions_per_principal):
            raise LimitReached("max_subscriptions_per_principal", cap, "resource subscriptions")
        listener = Listener(principal, wants, outbox, call.id)
        routes: dict[str, tuple[Upstream, str]] = {}
        try:
            for uri in uris:
                route, ticket = await self._admit_subscription(principal, uri, "subscriptions/listen")
                # Held under the gateway's spelling of the resource, as its updates arrive:
                # two spellings of one resource are one subscription.
                key = exposed_uri(*route)
                if key in listener.tickets:
                    governance.finish(ticket, "ok", "the same resource named twice")
                    continue
                routes[key], listener.tickets[key] = route, ticket
            # Again, with no await from here to the registration: a switch, a policy change
            # or a revocation may have come meanwhile, and concurrent listens must not
            # overshoot the limits.
            self.may_open_stream(principal)
            for upstream, original in routes.values():
                refusal = governance.refusal(principal, Target(upstream.name, "resource", original))
                if refusal is not None:
                    raise refusal
            if self.subscriptions.count(principal.id) + len(uris) > cap:
                raise LimitReached("max_subscriptions_per_principal", cap, "resource subscriptions")
        except BaseException:
            for ticket in listener.tickets.values():
                self.governance.finish(ticket, "cancelled", "the listen request was refused")
            raise
        self.listeners.add(listener)
        listener.opened = governance.inflight.open(principal, "stream", lambda how: listener.end())
        first = [route for uri, route in routes.items() if self.subscriptions.add(listener, principal.id, uri, route)]
        try:
            for upstream, original in first:
                try:
                    await upstream.subscribe(original)
                except GatewayError as exc:  # kept: the upstream applies it when it reconnects
                    log.warning("%s: subscribing to %s failed: %s", upstream.name, original, exc)
        except BaseException:  # the client left meanwhile
            self.unlisten(listener)
            raise
        return listener

    def may_open_stream(self, principal: Principal) -> None:
        """Raises the refusal if `principal` may not open another stream now."""
        refusal = self.governance.stopped(principal)
        if refusal is not None:
            raise refusal
        if self.governance.inflight.open_count(principal.id) >= (cap := self.limits.streams_per_principal):
            raise LimitReached("max_streams_per_principal", cap, "open streams")

    def unlisten(self, listener: Listener) -> None:
        """The stream ended (client, kill, revocation, slowness): audit how, let go of its resources."""
        if listener not in self.listeners:
            return
        self.listeners.discard(listener)
        ended = listener.opened.ended if listener.opened is not None else None
        if listener.opened is not None:
            self.governance.inflight.close(listener.opened)
        outcome = "killed" if ended is not None else "ok"
        for ticket in listener.tickets.values():
            self.governance.finish(ticket, outcome, f"listen stream ended ({ended})" if ended else None)
        self._release(listener, listener.principal, list(listener.tickets))

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
                listener.deliver(message)

    async def resource_updated(self, upstream: Upstream, uri: str, params: dict[str, Any]) -> None:
        gateway_uri = exposed_uri(upstream, uri)
        # The upstream's `_meta` names its stream to the gateway, not anything of the client's.
        fields = {k: v for k, v in params.items() if k != "_meta"}
        message = jsonrpc.notification("notifications/resources/updated", {**fields, "uri": gateway_uri})
        target = Target(upstream.name, "resource", uri)
        for holder in list(self.subscriptions.holders(gateway_uri)):
            assert isinstance(holder, Session | Listener)
            # Decided at delivery: policy and server or tool switches may have changed since.
            if not self.governance.visible(holder.principal, target):
                continue
            if isinstance(holder, Listener):
                holder.deliver(message)
            else:
                await _deliver(holder.send(message))

    async def policy_changed(self) -> None:
        """What clients may see changed: tell every client to list again."""
        for method in (
            "notifications/tools/list_changed",
            "notifications/prompts/list_changed",
            "notifications/resources/list_changed",
        ):
            await self.broadcast(jsonrpc.notification(method))


_NAMED: dict[str, tuple[Kind, str]] = {
    "tools/call": ("tool", "name"),
    "prompts/get": ("prompt", "name"),
    "resources/read": ("resource", "uri"),
    "resources/subscribe": ("resource", "uri"),
}
"""Methods that name one target: its kind and the parameter that names it."""


async def _deliver(sending: Awaitable[Any]) -> None:
    """One client's broken stream must not stop the others' notifications, nor fail the
    upstream connection the event came from (session outboxes do not block: see the
    transports; the bound is a backstop)."""
    try:
        with anyio.move_on_after(1):
            await sending
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, GatewayError, OSError) as exc:
        log.debug("dropped a notification: %s", exc)
    except Exception:  # one client's delivery: never the caller's failure
        log.exception("delivering a notification failed")


def _created_task(method: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """The upstream's `CreateTaskResult`, when a `tools/call` answered with one (read whole
    only then: other answers may be relayed unparsed)."""
    if method != "tools/call" or result.get("resultType") != "task":
        return None
    result = payload.materialize(result)
    return result if is_task(result) else None


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
