"""Downstream state: who is connected, at which protocol revision, and one request in flight.

A `Session` is one client: a Streamable HTTP session (handshake revisions), a stdio
connection, or, at 2026-07-28 where there are no sessions, the envelope of a single
request. A `Call` is one request being served; the transport that received it supplies
how to reach the client while it runs (`emit` for notifications about it, `ask` for
requests to the client when the revision has a back channel).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from .. import jsonrpc
from ..errors import ProtocolError, RpcError
from ..identity import Principal
from ..jsonrpc import Message, RequestId
from ..protocol import INTERNAL_ERROR, INVALID_PARAMS, MODERN_PROTOCOL_VERSIONS

RELAYED_CAPABILITIES = ("sampling", "elicitation", "roots")
"""The client capabilities the gateway relays to upstreams (what their requests need)."""
MAX_CAPABILITY_BYTES = 4096
"""Compact JSON of one relayed capability a session may keep; a larger one is refused."""
MAX_CLIENT_INFO = 256
"""Characters of each `clientInfo` field (name, version, title) a session keeps."""
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_LOG_RANK = {level: rank for rank, level in enumerate(LOG_LEVELS)}

Emit = Callable[[Message], Awaitable[None]]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Ask = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


def is_modern(version: str) -> bool:
    return version in MODERN_PROTOCOL_VERSIONS


def log_allowed(message_level: Any, threshold: str | None) -> bool:
    if threshold is None:
        return True
    return _LOG_RANK.get(message_level, len(LOG_LEVELS)) >= _LOG_RANK.get(threshold, 0)


def held_capabilities(caps: Any) -> dict[str, Any]:
    """What a session keeps of the capabilities its client declared in `initialize`: the
    ones the gateway relays (`RELAYED_CAPABILITIES`), each at most `MAX_CAPABILITY_BYTES`.
    A session may live for `session_idle_timeout`: the rest of what a client sent (any
    size up to the body limit) is not kept that long. Raises `ProtocolError` (invalid
    params) for a relayed capability that is not an object or is larger than that."""
    if not isinstance(caps, dict):
        return {}
    held: dict[str, Any] = {}
    for name in RELAYED_CAPABILITIES:
        if name not in caps:
            continue
        value = caps[name]
        try:
            size = len(jsonrpc.dumps(value)) if isinstance(value, dict) else -1
        except TypeError:  # e.g. an integer beyond 64 bits
            size = -1
        if not 0 <= size <= MAX_CAPABILITY_BYTES:
            raise ProtocolError(
                INVALID_PARAMS, f"capabilities.{name} must be an object of at most {MAX_CAPABILITY_BYTES} bytes"
            )
        held[name] = value
    return held


def held_client_info(info: Any) -> dict[str, str]:
    """What a session keeps of `initialize`'s clientInfo, for operators and logs: its
    name, version and title when they are strings, each cut to `MAX_CLIENT_INFO`."""
    if not isinstance(info, dict):
        return {}
    return {k: v[:MAX_CLIENT_INFO] for k in ("name", "version", "title") if isinstance(v := info.get(k), str)}


@dataclass(eq=False)
class Session:
    """One downstream client."""

    principal: Principal
    id: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    protocol_version: str = ""
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    client_info: dict[str, Any] = field(default_factory=dict)
    """What the client said it is (`initialize`'s clientInfo): for operators and logs."""
    log_level: str | None = None
    subscriptions: set[str] = field(default_factory=set)
    outbox: Emit | None = None
    """The channel for messages that belong to no request (GET stream, stdout); None if closed."""
    calls: dict[RequestId, Cancellable] = field(default_factory=dict)
    """Requests in flight, so `notifications/cancelled` can stop them."""
    ephemeral: bool = False
    """A 2026-07-28 request envelope rather than a lasting session."""
    asks: AskTable = field(default_factory=lambda: AskTable())
    """Requests the gateway sent this client, waiting for its answers."""

    async def send(self, message: Message) -> bool:
        """Send a session-level message; False when the client has no open channel for it."""
        if self.outbox is None:
            return False
        await self.outbox(message)
        return True


@dataclass(eq=False)
class _Waiting:
    done: anyio.Event = field(default_factory=anyio.Event)
    response: Message | None = None


class AskTable:
    """Requests sent to a client and the answers it posts back, matched by id."""

    def __init__(self) -> None:
        self._next = 0
        self._waiting: dict[RequestId, _Waiting] = {}

    async def ask(self, send: Emit, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next += 1
        request_id = f"gw-{self._next}"
        waiting = _Waiting()
        self._waiting[request_id] = waiting
        try:
            await send(jsonrpc.request(request_id, method, params))
            await waiting.done.wait()
        finally:
            self._waiting.pop(request_id, None)
        response = waiting.response
        assert response is not None
        if "error" in response:
            error = response["error"]
            raise RpcError(error if isinstance(error, dict) else {"code": INTERNAL_ERROR, "message": str(error)})
        result = response.get("result")
        if not isinstance(result, dict):
            raise ProtocolError(INVALID_PARAMS, f"the client's answer to {method} is not an object")
        return result

    def answer(self, response: Message) -> bool:
        """Deliver a client's response; False when nothing was waiting for it."""
        waiting = self._waiting.get(response.get("id"))  # type: ignore[arg-type]
        if waiting is None or waiting.response is not None:
            return False
        waiting.response = response
        waiting.done.set()
        return True


async def _no_emit(message: Message) -> None:
    return None


@dataclass(eq=False)
class Call:
    """One request from a client, being served."""

    session: Session
    id: RequestId
    method: str
    params: dict[str, Any]
    emit: Emit = _no_emit
    ask: Ask | None = None
    """Sends a request to the client and returns its result; None at 2026-07-28 (no back channel)."""
    protocol_version: str = ""
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    client_info: dict[str, Any] = field(default_factory=dict)
    """What the client said it is (`initialize`'s clientInfo): for operators and logs."""
    log_level: str | None = None
    traceparent: str | None = None
    """The W3C trace context of the HTTP request that carried it (`params._meta` may carry one too)."""

    @property
    def modern(self) -> bool:
        return is_modern(self.protocol_version)

    @property
    def principal(self) -> Principal:
        return self.session.principal
