"""Streamable HTTP for agents: the `/mcp` endpoint.

Serves both protocol eras on one URL, routed by the `MCP-Protocol-Version` header:

- handshake revisions (2024-11-05 ... 2025-11-25): `initialize` opens a session named by
  `Mcp-Session-Id`; later POSTs carry it; GET holds the session's stream for messages
  that belong to no request; DELETE ends it;
- 2026-07-28: every POST is self-contained (its `params._meta` carries the revision and
  the client's capabilities); no sessions, no GET stream; cancelling is closing the stream.

One JSON-RPC message per POST; bodies over the configured size are refused before they
are read in full.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    decode_header_value,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from starlette.types import Receive, Scope, Send

from .. import jsonrpc
from ..errors import GatewayError, ProtocolError
from ..identity import Principal
from ..jsonrpc import Message
from ..killswitch import Ending
from ..limits import RETRY_AFTER, LimitReached
from ..observe.tracing import TRACEPARENT
from ..protocol import (
    CLIENT_CAPABILITIES_META_KEY,
    HANDSHAKE_PROTOCOL_VERSIONS,
    HEADER_MISMATCH,
    INVALID_REQUEST,
    LAST_EVENT_ID_HEADER,
    LATEST_MODERN_VERSION,
    LOG_LEVEL_META_KEY,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    MCP_SESSION_ID_HEADER,
    MODERN_PROTOCOL_VERSIONS,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from ..proxy.relay_tasks import TASK_METHODS
from ..proxy.router import Router
from ..proxy.schemas import CompiledTool
from ..proxy.session import Call, Session
from ..tasks import supervised
from . import sse
from .replay import GET_STREAM, Replay, ReplayLimits

log = logging.getLogger(__name__)

Authenticate = Callable[[Scope], Awaitable[Principal | tuple[int, str, list[tuple[bytes, bytes]]]]]
"""Resolves a request to its principal, or to the HTTP refusal (status, reason, headers)."""


def unsupported_version(requested: str) -> ProtocolError:
    """The UnsupportedProtocolVersionError (2026-07-28) for a revision the gateway does not serve.

    `supported` lists the revisions a request can name on its own (the per-request era); the
    handshake revisions are still served, to clients that negotiate them with `initialize`.
    """
    data = {"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": requested}
    return ProtocolError(UNSUPPORTED_PROTOCOL_VERSION, f"Unsupported MCP-Protocol-Version: {requested}", data)


class _Disconnected(Exception):
    pass


@dataclass
class HttpOptions:
    max_body: int = 4 * 1024 * 1024
    session_idle_timeout: float = 1800.0
    max_sessions: int = 10_000
    session_handshake_timeout: float = 10.0
    """Seconds a new session may stay silent after `initialize` before it is closed."""
    replay: ReplayLimits = field(default_factory=ReplayLimits)


@dataclass(eq=False)
class _HttpSession:
    session: Session
    last_seen: float
    stream_open: bool = False
    end_stream: Callable[[], None] | None = None
    spoken: bool = False
    """The client sent something on the session after `initialize` (`notifications/initialized`
    comes at once from every client that means to use it)."""
    replay: Replay | None = None
    """The session's recent SSE events, for Last-Event-ID (None: resumability is off)."""


class _Exchange:
    """One request to `/mcp` as its handlers share it: the ASGI channels, the headers, the
    caller and, for a POST, its message and whether the client takes a stream. One object
    handed down the methods that serve the request, rather than the same six values through
    each of them; slotted, as one is made per request."""

    __slots__ = ("headers", "message", "receive", "scope", "send", "wants_sse", "who")

    message: Message
    """A POST's JSON-RPC message, set once its body is read and parsed."""
    wants_sse: bool
    """A POST's Accept takes `text/event-stream`, set before its body is read."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], who: Principal) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = headers
        self.who = who


def _headers(scope: Scope) -> dict[str, str]:
    # A field value excludes the optional whitespace around it (RFC 9110 §5.5); httptools
    # leaves it in, and SEP-2243 routing headers are compared as values.
    return {k.decode("latin-1"): v.decode("latin-1").strip(" \t") for k, v in scope["headers"]}


@lru_cache(maxsize=64)
def _accepts(accept: str) -> tuple[bool, bool]:
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    wildcard = "*/*" in types
    return (
        wildcard or "application/json" in types or "application/*" in types,
        wildcard or "text/event-stream" in types or "text/*" in types,
    )


class McpEndpoint:
    """The ASGI app behind `/mcp`."""

    def __init__(
        self,
        router: Router,
        authenticate: Authenticate,
        tg: TaskGroup,
        options: HttpOptions | None = None,
    ) -> None:
        self.router = router
        self.authenticate = authenticate
        self.options = options or HttpOptions()
        self.sessions: dict[str, _HttpSession] = {}
        self._per_principal: Counter[str] = Counter()
        self._tg = tg
        tg.start_soon(supervised("session sweeper", self._sweep_idle))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        # Host and Origin were checked by HostCheckMiddleware before the request got here.
        headers = _headers(scope)
        who = await self.authenticate(scope)
        if not isinstance(who, Principal):
            status, reason, extra = who
            error = ProtocolError(INVALID_REQUEST, reason)
            await sse.send_json(send, status, jsonrpc.error(None, error), extra)
            return
        exchange = _Exchange(scope, receive, send, headers, who)
        method = scope["method"]
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        modern = version in MODERN_PROTOCOL_VERSIONS
        if method == "POST":
            await self._post(exchange, modern)
        elif method == "GET":
            if modern:
                await sse.send_status(send, 405, "No GET stream at 2026-07-28", [(b"allow", b"POST")])
            else:
                await self._get(exchange)
        elif method == "DELETE":
            await self._delete(exchange)
        else:
            await sse.send_status(send, 405, "Method not allowed", [(b"allow", b"GET, POST, DELETE")])

    # -- POST ------------------------------------------------------------------------------

    async def _read_body(self, exchange: _Exchange) -> bytes | None:
        limit = self.options.max_body
        receive = exchange.receive
        declared = exchange.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _post(self, exchange: _Exchange, modern: bool) -> None:
        send, headers = exchange.send, exchange.headers
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            await sse.send_status(send, 415, "Content-Type must be application/json")
            return
        wants_json, exchange.wants_sse = _accepts(headers.get("accept", "*/*"))
        if not wants_json:
            await sse.send_status(send, 406, "Accept must include application/json")
            return
        try:
            body = await self._read_body(exchange)
        except _Disconnected:
            return  # the client left before it finished sending
        if body is None:
            error = ProtocolError(INVALID_REQUEST, f"Request body exceeds {self.options.max_body} bytes")
            await sse.send_json(send, 413, jsonrpc.error(None, error))
            return
        try:
            exchange.message = jsonrpc.parse_incoming(body)
        except ProtocolError as exc:
            await sse.send_json(send, 400, jsonrpc.error(None, exc))
            return
        if modern:
            await self._post_modern(exchange)
        else:
            await self._post_handshake(exchange)

    async def _post_handshake(self, exchange: _Exchange) -> None:
        send, headers, message = exchange.send, exchange.headers, exchange.message
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await sse.send_json(send, 400, jsonrpc.error(message.get("id"), unsupported_version(version)))
            return
        if message.get("method") == "initialize" and "id" in message:
            await self._initialize(exchange)
            return
        held = await self._session(exchange, message.get("id"))
        if held is None:
            return
        session = held.session
        if jsonrpc.is_response(message):
            session.asks.answer(message)
            await sse.send_status(send, 202)
            return
        if jsonrpc.is_notification(message):
            await self.router.notify(session, message)
            await sse.send_status(send, 202)
            return
        call = Call(
            session,
            message["id"],
            message["method"],
            jsonrpc.params_of(message),
            protocol_version=session.protocol_version,
            client_capabilities=session.client_capabilities,
            log_level=session.log_level,
            traceparent=headers.get(TRACEPARENT),
        )
        await self._serve(exchange, call, held.replay)

    async def _initialize(self, exchange: _Exchange) -> None:
        send, who, message = exchange.send, exchange.who, exchange.message
        session = Session(principal=who)
        traceparent = exchange.headers.get(TRACEPARENT)
        call = Call(session, message["id"], "initialize", jsonrpc.params_of(message), traceparent=traceparent)
        try:
            result = await self.router.handle(call)
        except GatewayError as exc:
            await sse.send_json(send, 200, jsonrpc.error(call.id, exc))
            return
        # Checked with no await before the session is stored, so a burst cannot overshoot.
        cap = self.router.limits.sessions_per_principal
        if self._per_principal[who.id] >= cap:
            # One principal fills only its own quota; the global cap below is the backstop.
            refusal = LimitReached("max_sessions_per_principal", cap, "sessions")
            await sse.send_json(send, 429, jsonrpc.error(call.id, refusal), [(b"retry-after", _RETRY_AFTER)])
            return
        if len(self.sessions) >= self.options.max_sessions:
            await sse.send_status(send, 503, "Too many sessions", [(b"retry-after", _RETRY_AFTER)])
            return
        replay = Replay(self.options.replay, who.id) if self.options.replay.enabled else None
        self.sessions[session.id] = _HttpSession(session, time.monotonic(), replay=replay)
        if replay is not None:
            # Until a GET stream is open, what would go on it is kept for one that resumes.
            session.outbox = _keeper(replay)
        self._per_principal[who.id] += 1

        def close() -> None:
            self._tg.start_soon(self.close, session.id)

        self.router.open_session(session, close=close)
        await sse.send_json(
            send, 200, jsonrpc.result(call.id, result), [(MCP_SESSION_ID_HEADER.encode(), session.id.encode())]
        )

    async def _session(self, exchange: _Exchange, request_id: Any) -> _HttpSession | None:
        send = exchange.send
        session_id = exchange.headers.get(MCP_SESSION_ID_HEADER)
        if session_id is None:
            error = ProtocolError(INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required (initialize first)")
            await sse.send_json(send, 400, jsonrpc.error(request_id, error))
            return None
        held = self.sessions.get(session_id)
        if held is None or held.session.principal.id != exchange.who.id:
            # Another principal's session is as unknown to this caller as a made-up one.
            error = ProtocolError(INVALID_REQUEST, "Session not found: initialize a new session")
            await sse.send_json(send, 404, jsonrpc.error(request_id, error))
            return None
        held.last_seen = time.monotonic()
        held.spoken = True
        return held

    async def _serve(self, exchange: _Exchange, call: Call, replay: Replay | None = None) -> None:
        session = call.session
        wants_sse = exchange.wants_sse
        # At 2026-07-28 a client cancels by hanging up; earlier, with notifications/cancelled.
        cancellation = None if session.ephemeral else sse.Cancellation()
        if cancellation is not None:
            session.calls[call.id] = cancellation

        async def handler(emit: Callable[[Message], Awaitable[None]]) -> dict[str, Any]:
            call.emit = emit
            if wants_sse and not call.modern:
                call.ask = lambda method, params: session.asks.ask(emit, method, params)
            return await self.router.handle(call)

        try:
            status_for = ERROR_CODE_HTTP_STATUS if call.modern else {}
            # Handshake-era answers are streams, as clients of those revisions expect; at
            # 2026-07-28 a plain JSON answer is sent unless the call has something to stream.
            await sse.answer(
                exchange.receive,
                exchange.send,
                call.id,
                handler,
                status_for=status_for,
                streaming=wants_sse,
                prefer_sse=not call.modern,
                cancellation=cancellation,
                replay=replay,
                owner=call.principal.id,
            )
        finally:
            if cancellation is not None and session.calls.get(call.id) is cancellation:
                del session.calls[call.id]

    async def _post_modern(self, exchange: _Exchange) -> None:
        send, headers, who, message = exchange.send, exchange.headers, exchange.who, exchange.message
        if jsonrpc.is_notification(message) or jsonrpc.is_response(message):
            # No client-to-server notifications at 2026-07-28; cancelling is closing the stream.
            await sse.send_status(send, 202)
            return
        request_id = message["id"]
        rejection = self._modern_rejection(exchange.scope, headers, message)
        if rejection is not None:
            # Refused before any decision, and nothing forwarded; on record if it names a target.
            await self.router.refuse_rejected(who, message, rejection.message)
            error = ProtocolError(rejection.code, rejection.message, rejection.data)
            await sse.send_json(send, ERROR_CODE_HTTP_STATUS.get(rejection.code, 400), jsonrpc.error(request_id, error))
            return
        params = jsonrpc.params_of(message)
        meta = jsonrpc.meta_of(params)
        caps = meta.get(CLIENT_CAPABILITIES_META_KEY)
        level = meta.get(LOG_LEVEL_META_KEY)
        session = Session(principal=who, id="", protocol_version=LATEST_MODERN_VERSION, ephemeral=True)
        call = Call(
            session,
            request_id,
            message["method"],
            params,
            protocol_version=LATEST_MODERN_VERSION,
            client_capabilities=caps if isinstance(caps, dict) else {},
            log_level=level if isinstance(level, str) else None,
            traceparent=headers.get(TRACEPARENT),
        )
        if call.method == "subscriptions/listen":
            if not exchange.wants_sse:
                await sse.send_status(send, 406, "subscriptions/listen answers with text/event-stream")
                return
            await self._listen(exchange, call)
            return
        await self._serve(exchange, call)

    def _modern_rejection(
        self, scope: Scope, headers: dict[str, str], message: Message
    ) -> InboundLadderRejection | None:
        if len(headers) != len(scope["headers"]):  # some header name appears more than once
            raw = ((k.decode("latin-1"), "") for k, _ in scope["headers"])  # names are all it compares
            duplicated = find_duplicated_routing_header(raw)
            if duplicated is not None:
                return InboundLadderRejection(
                    code=HEADER_MISMATCH, message=f"{duplicated} header appears more than once"
                )
        verdict = classify_inbound_request(message, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            return verdict
        if message["method"] in TASK_METHODS and MCP_NAME_HEADER in headers:
            # SEP-2663 extends SEP-2243's Mcp-Name to the tasks methods: it names the task.
            task_id = jsonrpc.params_of(message).get("taskId")
            if decode_header_value(headers[MCP_NAME_HEADER].strip()) != task_id:
                return InboundLadderRejection(
                    code=HEADER_MISMATCH, message="Mcp-Name header does not match params.taskId"
                )
        if message["method"] == "tools/call":
            params = jsonrpc.params_of(message)
            name = params.get("name")
            entry = self.router.catalog.tool(name) if isinstance(name, str) else None
            arguments = params.get("arguments")
            if entry is not None and isinstance(arguments, dict) and _mentions_param_headers(entry.tool):
                return validate_mcp_param_headers(entry.tool.schema, arguments, headers)
        return None

    async def _listen(self, exchange: _Exchange, call: Call) -> None:
        receive, send = exchange.receive, exchange.send
        outgoing_send, outgoing = anyio.create_memory_object_stream[Message](64)
        try:
            # Checked, decided, audited and registered before the acknowledgement: nothing
            # that happens after it is missed, and nothing is registered for a refusal.
            listener = await self.router.listen(call, outgoing_send)
        except GatewayError as exc:
            outgoing_send.close()
            outgoing.close()
            await _refuse(send, call.id, exc)
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": sse.SSE_HEADERS})
            ack = jsonrpc.notification("notifications/subscriptions/acknowledged", {"notifications": listener.wants})
            listener.deliver(ack)
            with anyio.CancelScope() as scope:
                listener.on_end = scope.cancel  # a kill or revocation ends it at once
                async with outgoing_send, outgoing:
                    await sse.relay(receive, send, outgoing)
            if scope.cancelled_caught:
                await _end_response(send)
        except OSError:
            pass  # the client is gone
        finally:
            self.router.unlisten(listener)

    # -- GET and DELETE ------------------------------------------------------------------------

    async def _get(self, exchange: _Exchange) -> None:
        receive, send, headers, who = exchange.receive, exchange.send, exchange.headers, exchange.who
        if not _accepts(headers.get("accept", ""))[1]:
            await sse.send_status(send, 406, "Accept must include text/event-stream")
            return
        held = await self._session(exchange, None)
        if held is None:
            return
        resumed = None
        last_event_id = headers.get(LAST_EVENT_ID_HEADER)
        if last_event_id is not None and held.replay is not None:
            # Another session's id (or one evicted) is not found: nothing is replayed.
            resumed = held.replay.locate(last_event_id)
        if resumed is not None and resumed[0] != GET_STREAM:
            await self._resume(exchange, held, *resumed)
            return
        if held.stream_open:
            await sse.send_status(send, 409, "This session already has a GET stream open")
            return
        try:
            self.router.may_open_stream(who)
        except GatewayError as exc:
            await _refuse(send, None, exc, default=403)
            return
        held.stream_open = True
        session = held.session
        outgoing_send, outgoing = anyio.create_memory_object_stream[Message](256)
        scope = anyio.CancelScope()

        def end(how: Ending) -> None:
            outgoing_send.close()
            scope.cancel()

        opened = self.router.governance.inflight.open(who, "stream", end)

        async def outbox(message: Message) -> None:
            try:
                outgoing_send.send_nowait(message)
            except anyio.ClosedResourceError:
                pass
            except anyio.WouldBlock:
                log.warning(
                    "session %s: GET stream is not keeping up; dropped %s", session.id[:8], message.get("method")
                )

        session.outbox = outbox
        held.end_stream = outgoing_send.close
        replay = held.replay
        frame_of = sse.frame if replay is None else lambda message: replay.record(GET_STREAM, message)
        await send({"type": "http.response.start", "status": 200, "headers": sse.SSE_HEADERS})
        opening = b": stream open\n\n"
        if replay is not None:
            opening += replay.record(GET_STREAM, None)
            if resumed is not None:  # what this stream carried after the client's last event
                opening += b"".join(chunk for _, chunk in replay.after(GET_STREAM, resumed[1]))
        await send({"type": "http.response.body", "body": opening, "more_body": True})

        def seen() -> None:
            held.last_seen = time.monotonic()

        try:
            with scope:
                async with outgoing_send, outgoing:
                    # Ends when the client hangs up, the session ends (DELETE, idle sweep,
                    # revocation) or a switch stops its principal.
                    await sse.relay(receive, send, outgoing, on_sent=seen, frame_of=frame_of)
            if scope.cancelled_caught:
                await _end_response(send)
        except OSError:
            pass  # the client is gone
        finally:
            self.router.governance.inflight.close(opened)
            if session.outbox is outbox:
                still_open = self.sessions.get(session.id) is held
                session.outbox = _keeper(replay) if replay is not None and still_open else None
            held.stream_open = False

    async def _resume(self, exchange: _Exchange, held: _HttpSession, stream: str, seq: int) -> None:
        """GET with the Last-Event-ID of a POST stream: its later events, then (if its call is
        still running) the rest as it comes; the response ends with the stream."""
        receive, send = exchange.receive, exchange.send
        replay = held.replay
        assert replay is not None
        who = held.session.principal
        try:
            self.router.may_open_stream(who)
        except GatewayError as exc:
            await _refuse(send, None, exc, default=403)
            return
        scope = anyio.CancelScope()
        opened = self.router.governance.inflight.open(who, "stream", lambda how: scope.cancel())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": sse.SSE_HEADERS})
            with scope:
                async with anyio.create_task_group() as tg:

                    async def watch_disconnect() -> None:
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        tg.cancel_scope.cancel()

                    tg.start_soon(watch_disconnect)
                    async for chunk in replay.follow(stream, seq, sse.KEEPALIVE):
                        held.last_seen = time.monotonic()
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    tg.cancel_scope.cancel()
            await _end_response(send)
        except OSError:
            pass  # the client is gone
        finally:
            self.router.governance.inflight.close(opened)

    async def _delete(self, exchange: _Exchange) -> None:
        held = await self._session(exchange, None)
        if held is None:
            return
        await self.close(held.session.id)
        await sse.send_status(exchange.send, 200)

    async def close(self, session_id: str) -> None:
        held = self.sessions.pop(session_id, None)
        if held is not None:
            principal_id = held.session.principal.id
            self._per_principal[principal_id] -= 1
            if self._per_principal[principal_id] <= 0:
                del self._per_principal[principal_id]
            held.session.outbox = None
            if held.replay is not None:
                held.replay.close()
            if held.end_stream is not None:
                held.end_stream()
            await self.router.close_session(held.session)

    async def _sweep_idle(self) -> None:
        """Close sessions idle past `session_idle_timeout`, and those whose client sent
        nothing after `initialize` past `session_handshake_timeout`: such a session holds a
        place in its principal's quota and memory for nobody (an abandoned or scripted
        handshake); until it is closed it counts like any other."""
        options = self.options
        while True:
            await anyio.sleep(min(60.0, options.session_idle_timeout / 2, options.session_handshake_timeout / 2))
            now = time.monotonic()
            for session_id, held in list(self.sessions.items()):
                limit = options.session_idle_timeout if held.spoken else options.session_handshake_timeout
                if held.last_seen < now - limit and not held.stream_open and not held.session.calls:
                    if held.spoken:
                        log.info("session %s: closed after %ss idle", session_id[:8], limit)
                    else:
                        log.info("session %s: closed, nothing sent in the %ss after initialize", session_id[:8], limit)
                    await self.close(session_id)


_RETRY_AFTER = str(RETRY_AFTER).encode()


def _keeper(replay: Replay) -> Callable[[Message], Awaitable[None]]:
    """A session outbox for while no GET stream is open: keeps the events for one that resumes."""

    async def keep(message: Message) -> None:
        replay.record(GET_STREAM, message)

    return keep


async def _end_response(send: Send) -> None:
    """End a stream the gateway stopped (kill, revocation). The relay may have ended the
    response itself just before it was stopped; the server refuses a second end."""
    try:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except RuntimeError:
        log.debug("the stream's response had already ended")


async def _refuse(send: Send, request_id: Any, exc: GatewayError, default: int = 200) -> None:
    """Refuse a stream before it opens: 400 for a malformed request, 429 (with Retry-After)
    for a per-principal limit, else `default` with the JSON-RPC error (a denial)."""
    if isinstance(exc, LimitReached):
        await sse.send_json(send, 429, jsonrpc.error(request_id, exc), [(b"retry-after", _RETRY_AFTER)])
        return
    status = ERROR_CODE_HTTP_STATUS.get(exc.code, default)
    await sse.send_json(send, status, jsonrpc.error(request_id, exc))


def _mentions_param_headers(tool: CompiledTool) -> bool:
    """Whether `Mcp-Param-*` validation has anything to check for this call: only a schema
    that mentions `x-mcp-header` has positions to compare headers with. Without one, the
    headers a client sends are checked against nothing (the SDK's check walks the schema to
    find no position and passes them); walking it anyway cost ~50 ms a MB of schema, paid on
    the loop for any call that carried a junk `Mcp-Param-*` header."""
    return tool.annotated
