"""One JSON-RPC conversation with an upstream server, over any transport.

`RpcConnection` matches responses to requests and routes everything else the upstream
sends. Many downstream calls share one connection, so traffic that belongs to a call
(progress, log messages, server-to-client requests such as sampling or elicitation)
must reach the right caller:

- progress is routed by token: the connection gives every request that asked for
  progress a token of its own and maps it back;
- over HTTP the transport knows which POST stream carried a message (`related`);
- over stdio nothing says which call a message belongs to: when exactly one call is in
  flight it is that call, otherwise log messages go to the connection-level handler and
  requests are refused, rather than guessed.

A call's side traffic goes to its `Sink`. Messages that belong to no call go to
`on_notification`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from .. import jsonrpc
from ..errors import GatewayError, ProtocolError, RpcError, UpstreamError, UpstreamTimeout
from ..jsonrpc import Message, RequestId
from ..protocol import INTERNAL_ERROR, METHOD_NOT_FOUND
from . import payload

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where the side traffic of one upstream request goes: the downstream call that made it."""

    async def notify(self, message: Message) -> None:
        """A notification about this call (progress with the sink's own token restored, or a log)."""

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request the upstream makes of the client while serving this call; returns its result."""


class Transport(Protocol):
    """Moves messages to and from one upstream. Inbound messages go to the connection's `feed`."""

    async def send(self, message: Message, headers: dict[str, str] | None = None) -> None:
        """Send one message. For a request, a transport may return at once (stdio: the
        answer comes later on the shared stream) or run the whole exchange in the caller's
        task and return once the answer has been fed (HTTP: the answer is on the request's
        own response); cancelling the caller ends such an exchange."""
        ...

    def abandon(self, request_id: RequestId) -> bool:
        """The caller stopped waiting for `request_id`. True when a `notifications/cancelled`
        should be sent too."""
        ...


DEADLINE_TICK = 0.1
"""Seconds between a connection's looks for requests past their deadline: a timeout fires
up to this late. One periodic look per connection, not a timer per request (arming and
disarming a timer on every call measured at about 4% of the gateway's throughput)."""


@dataclass(slots=True)
class _Pending:
    sink: Sink | None
    future: asyncio.Future[Message]
    task: asyncio.Task[Any]
    """The caller's: cancelled when the deadline passes (over HTTP the exchange runs in it)."""
    deadline: float
    progress_token: Any = None
    expired: bool = False
    size: int = 0
    """Bytes of the answer, when the transport counted them (stdio: its line)."""


NotificationHandler = Callable[[Message], Awaitable[None]]
DISPATCH_DEADLINE = 2.0
"""Seconds one upstream notification may take to hand over to the gateway's clients."""
YIELD_EVERY = 64
"""Messages a transport's reader may feed before it lets the loop run something else: a
stream that arrives faster than it is fed would otherwise hold the loop (issue 12: a flood
of notifications from one upstream stalled every other)."""
NOTIFICATION_RATE = 1000.0
"""Progress and log notifications per second one connection passes on to clients, with a
burst of as many (`notification_rate`). Past it, the latest progress of each call is kept
and delivered before its answer or when the rate allows; log messages are dropped. Both
are counted and logged."""
REPORT_EVERY = 10.0


def configure(notification_rate: float) -> None:
    global NOTIFICATION_RATE
    NOTIFICATION_RATE = notification_rate


class RpcConnection:
    """Request/response matching and routing for one upstream connection."""

    def __init__(self, name: str, on_notification: NotificationHandler) -> None:
        self.name = name
        self.transport: Transport | None = None
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._pending: dict[RequestId, _Pending] = {}
        self._progress: dict[Any, tuple[_Pending, Any]] = {}
        self._asks: dict[RequestId, anyio.CancelScope] = {}
        self._tasks: Any = None  # the task group that serves upstream-initiated requests
        self._background: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.TimerHandle | None = None
        self.closed = anyio.Event()
        self._tokens = NOTIFICATION_RATE
        self._refilled = 0.0
        self._held: dict[Any, Message] = {}  # the latest progress of each call, past the rate
        self.coalesced = 0
        self.dropped = 0
        self._reported = (0.0, 0, 0)

    @property
    def in_flight(self) -> int:
        """Calls made for clients (not the gateway's own listen streams and health checks)."""
        return sum(1 for pending in self._pending.values() if pending.sink is not None)

    def bind(self, transport: Transport, task_group: Any) -> None:
        self.transport = transport
        self._tasks = task_group

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        sink: Sink | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send a request and wait for its result; an error response raises `RpcError`."""
        if self.closed.is_set() or self.transport is None:
            raise UpstreamError(f"upstream {self.name!r} is not connected", {"upstream": self.name})
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadline = math.inf if timeout is None else loop.time() + timeout
        pending = _Pending(sink, loop.create_future(), task, deadline)
        if params is not None:
            meta = params.get("_meta")
            if isinstance(meta, dict) and "progressToken" in meta:
                # The caller's token is unique only on its own session; ours is unique here.
                pending.progress_token = meta["progressToken"]
                params = {**params, "_meta": {**meta, "progressToken": request_id}}
                self._progress[request_id] = (pending, pending.progress_token)
        self._pending[request_id] = pending
        if timeout is not None and self._ticker is None:
            self._ticker = loop.call_later(DEADLINE_TICK, self._expire_overdue)
        cancelling = task.cancelling()
        try:
            # The deadline covers the send too: over HTTP the exchange runs inside it.
            await self.transport.send(jsonrpc.request(request_id, method, params), headers)
            response = await pending.future
            if pending.size >= payload.SPLICE_AT and (lease := payload.current()) is not None:
                # Already read (a stdio line), but held until its client has it: counted the
                # same as an HTTP answer, and refused past the same limits.
                lease.grow(pending.size, self.name)
        except asyncio.CancelledError:
            # The upstream is told in a task of its own: this one is being cancelled.
            if pending.expired and task.uncancel() <= cancelling:  # the deadline, and nothing else, cancelled it
                self._spawn(self._cancel(request_id, "timeout"))
                raise UpstreamTimeout(
                    f"upstream {self.name!r} did not answer {method} within {timeout:g}s",
                    {"upstream": self.name, "timeout": timeout},
                ) from None
            self._spawn(self._cancel(request_id, "cancelled by the client"))
            raise
        finally:
            self._pending.pop(request_id, None)
            if pending.progress_token is not None:
                self._progress.pop(request_id, None)
                self._held.pop(request_id, None)
        if "error" in response:
            error = response["error"]
            raise RpcError(error if isinstance(error, dict) else {"code": INTERNAL_ERROR, "message": str(error)})
        result = response.get("result")
        if not isinstance(result, dict):
            raise UpstreamError(f"upstream {self.name!r} sent a result that is not an object", {"upstream": self.name})
        return result

    def _expire_overdue(self) -> None:
        """Cancel the callers whose deadline has passed; look again while any request has one."""
        self._ticker = None
        loop = asyncio.get_running_loop()
        now, waiting = loop.time(), False
        for pending in self._pending.values():
            if pending.expired or pending.deadline == math.inf or pending.future.done():
                continue
            if pending.deadline <= now:
                pending.expired = True
                pending.task.cancel()
            else:
                waiting = True
        if waiting and not self.closed.is_set():
            self._ticker = loop.call_later(DEADLINE_TICK, self._expire_overdue)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        if self.transport is not None and not self.closed.is_set():
            await self.transport.send(jsonrpc.notification(method, params))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, request_id: RequestId, reason: str) -> None:
        if self.transport is None:
            return
        if self.transport.abandon(request_id) and not self.closed.is_set():
            try:
                async with asyncio.timeout(1):
                    await self.notify("notifications/cancelled", {"requestId": request_id, "reason": reason})
            except (GatewayError, OSError, TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.debug("%s: could not send cancellation for %s", self.name, request_id)

    def close(self, reason: str) -> None:
        """Fail every pending request; the connection is finished."""
        if self.closed.is_set():
            return
        self.closed.set()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for request_id, pending in list(self._pending.items()):
            if not pending.future.done():
                error = UpstreamError(f"upstream {self.name!r} disconnected: {reason}", {"upstream": self.name})
                pending.future.set_result(jsonrpc.error(request_id, error))
        for scope in self._asks.values():
            scope.cancel()

    # -- inbound ---------------------------------------------------------------------

    def _call_for(self, related: RequestId | None) -> _Pending | None:
        if related is not None:
            return self._pending.get(related)
        # Without a stream to go by, only a lone call can own the message. Requests with
        # no caller (a long-lived listen, a catalog refresh) cannot own anything.
        owner = None
        for pending in self._pending.values():
            if pending.sink is not None:
                if owner is not None:
                    return None
                owner = pending
        return owner

    def _admit(self) -> bool:
        """Whether a progress or log notification fits the connection's rate."""
        now = time.monotonic()
        self._tokens = min(NOTIFICATION_RATE, self._tokens + (now - self._refilled) * NOTIFICATION_RATE)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        since, coalesced, dropped = self._reported
        if now - since >= REPORT_EVERY:
            if self.coalesced > coalesced or self.dropped > dropped:
                log.warning(
                    "%s: over %g notifications/s: %d progress coalesced, %d log messages dropped so far",
                    self.name,
                    NOTIFICATION_RATE,
                    self.coalesced,
                    self.dropped,
                )
            self._reported = (now, self.coalesced, self.dropped)
        return False

    async def _progress_to(self, pending: _Pending, token: Any, message: Message) -> None:
        if pending.sink is not None:
            params = {**jsonrpc.params_of(message), "progressToken": pending.progress_token}
            method = message["method"]
            await self._dispatch(method, pending.sink.notify(jsonrpc.notification(method, params)))

    async def feed(self, message: Message, related: RequestId | None = None, size: int = 0) -> None:
        """Route one message from the upstream. `related` is the request whose stream carried
        it; `size` its bytes, when the transport counted them."""
        if "method" not in message:
            request_id = message.get("id")
            pending = self._pending.get(request_id)  # type: ignore[arg-type]
            if pending is not None and not pending.future.done():
                pending.size = size
                held = self._held.pop(request_id, None) if self._held else None
                if held is not None:  # the last progress the rate held back goes before the answer
                    await self._progress_to(pending, request_id, held)
                pending.future.set_result(message)
            return
        method = message["method"]
        if "id" in message:
            if self._tasks is None:
                return
            self._tasks.start_soon(self._serve_request, message, related)
            return
        params = jsonrpc.params_of(message)
        if method == "notifications/progress":
            token = params.get("progressToken")
            entry = self._progress.get(token)
            if entry is not None and entry[0].sink is not None:
                if not self._admit():
                    self.coalesced += 1
                    self._held[token] = message
                    return
                self._held.pop(token, None)  # superseded by this one
                await self._progress_to(entry[0], token, message)
            return
        if method == "notifications/cancelled":
            scope = self._asks.get(params.get("requestId"))  # type: ignore[arg-type]
            if scope is not None:
                scope.cancel()
            return
        if method == "notifications/message":
            if not self._admit():
                self.dropped += 1
                return
            call = self._call_for(related)
            if call is not None and call.sink is not None:
                await self._dispatch(method, call.sink.notify(message))
                return
        await self._dispatch(method, self._on_notification(message))

    async def _dispatch(self, method: str, handling: Awaitable[None]) -> None:
        """Hand an upstream notification to the gateway: the boundary where code run for
        clients (sinks, listeners, sessions) meets this connection's reader. Nothing it
        raises reaches the reader, and it gets a bounded time: a slow client loses the
        notification, the connection never stalls or drops for it."""
        try:
            with anyio.move_on_after(DISPATCH_DEADLINE) as scope:
                await handling
            if scope.cancelled_caught:
                log.warning("%s: delivering %s took over %ss: dropped", self.name, method, DISPATCH_DEADLINE)
        except Exception:  # a client's delivery: never the connection's failure
            log.exception("%s: delivering %s failed", self.name, method)

    async def _serve_request(self, message: Message, related: RequestId | None) -> None:
        """Answer a request the upstream sends us (ping, sampling, elicitation, roots)."""
        request_id = message["id"]
        method = message["method"]
        reply: Message
        with anyio.CancelScope() as scope:
            self._asks[request_id] = scope
            try:
                if method == "ping":
                    reply = jsonrpc.result(request_id, {})
                else:
                    call = self._call_for(related)
                    if call is None or call.sink is None:
                        raise ProtocolError(
                            METHOD_NOT_FOUND if related is None and not self._pending else INTERNAL_ERROR,
                            f"{method} arrived outside any call the gateway can attribute it to",
                        )
                    reply = jsonrpc.result(request_id, await call.sink.ask(method, jsonrpc.params_of(message)))
            except GatewayError as exc:
                reply = jsonrpc.error(request_id, exc)
            except Exception:  # the top of a task: answer the upstream, keep the connection
                log.exception("%s: relaying %s failed", self.name, method)
                reply = jsonrpc.error(
                    request_id, ProtocolError(INTERNAL_ERROR, f"the gateway could not relay {method}")
                )
            finally:
                self._asks.pop(request_id, None)
        if scope.cancelled_caught:
            return
        if self.transport is not None and not self.closed.is_set():
            try:
                await self.transport.send(reply)
            except (GatewayError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.debug("%s: could not answer %s", self.name, method)
