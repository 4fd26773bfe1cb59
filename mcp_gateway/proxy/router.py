"""The server side of the gateway: every MCP method a client can send, answered from the
merged catalog or forwarded to the upstream that owns the name.

Both downstream transports (Streamable HTTP and stdio) hand each request to
`Router.handle` as a `Call` and write back what it returns or raises. Upstream events
(catalog changes, resource updates) come back through the `Events` interface and are
fanned out to the clients that asked for them.

The router is assembled from the halves named for what they hold: `targets` (the methods
that name one tool, prompt or resource) over `forward` (decide, audit, forward), and
`listen` (subscriptions and listen streams); this module holds the method table, the
methods answered from the gateway itself, sessions and the fan-out of list changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from anyio.abc import TaskGroup

from .. import __version__, jsonrpc
from ..errors import ProtocolError
from ..governance import Governance
from ..identity import Principal
from ..jsonrpc import Message
from ..killswitch import Ending, Opened
from ..limits import Limits
from ..policy_model import Kind, Target
from ..protocol import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    INVALID_PARAMS,
    LATEST_HANDSHAKE_VERSION,
    METHOD_NOT_FOUND,
    MODERN_PROTOCOL_VERSIONS,
    SERVER_INFO_META_KEY,
    TASKS_EXTENSION,
)
from . import bridge
from .catalog import Catalog
from .forward import map_content_uris
from .listen import Following, Listener, deliver_quietly
from .relay_tasks import HANDSHAKE_CAPABILITY, HANDSHAKE_TASK_METHODS, TaskRegistry
from .session import LOG_LEVELS, Call, Session, held_capabilities, held_client_info
from .subscriptions import Subscriptions
from .targets import TargetMethods
from .task_methods import TaskMethods
from .upstream import Events, Upstream

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


class Router(TargetMethods, Following, Events):
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
        task_methods = TaskMethods(self.tasks, governance, self._governed, map_content_uris)
        self.limits = Limits()
        self.identity = None
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

    async def catalog_changed(self, upstream: Upstream) -> None:
        changed = self.catalog.rebuild()
        for method in sorted({_LIST_CHANGED[kind] for kind in changed}):
            await self.broadcast(jsonrpc.notification(method))

    async def broadcast(self, message: Message) -> None:
        """Send a list-changed notification to every client that can receive one."""
        flag = _LISTEN_FLAG.get(message["method"])
        for session in list(self.sessions):
            await deliver_quietly(session.send(message))
        for listener in list(self.listeners):
            if flag is not None and listener.wants.get(flag):
                listener.deliver(message)

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
