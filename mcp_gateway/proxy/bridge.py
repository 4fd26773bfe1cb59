"""Relaying what an upstream asks of the client while it serves a call.

Two protocol eras meet here. A handshake-era client can be sent requests mid-call
(`sampling/createMessage`, `elicitation/create`, `roots/list`); a 2026-07-28 client cannot,
and instead receives an `InputRequiredResult`, then retries the call carrying the answers
(multi round trip). The gateway's upstream connection speaks whichever era the upstream
does, so each pairing needs its own bridge:

| client \\ upstream | handshake                    | 2026-07-28                                 |
| ------------------ | ---------------------------- | ------------------------------------------ |
| handshake          | relay the request as it is   | ask the client for each input request, retry |
| 2026-07-28         | park the upstream call, answer `input_required`, resume on retry | pass through |

Parked calls live in this process: a client that resumes one must reach the same replica
(see the README on sessions behind a load balancer); unclaimed ones expire.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .. import jsonrpc
from ..errors import INVALID_PARAMS, INVALID_REQUEST, GatewayError, ProtocolError
from ..jsonrpc import Message
from .session import Call, log_allowed

log = logging.getLogger(__name__)

CAPABILITY_FOR = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
STATE_PREFIX = "mcpgw:"
MAX_ROUNDS = 16
PARK_SECONDS = 600.0


def is_input_required(result: dict[str, Any]) -> bool:
    return result.get("resultType") == "input_required"


def _require_capability(call: Call, method: str) -> None:
    capability = CAPABILITY_FOR.get(method)
    if capability is None:
        raise ProtocolError(INVALID_REQUEST, f"the gateway does not relay {method} to clients")
    if capability not in call.client_capabilities:
        raise ProtocolError(INVALID_REQUEST, f"the client did not declare the {capability!r} capability")


class CallSink:
    """Routes an upstream call's side traffic to the client that made the call."""

    def __init__(self, call: Call) -> None:
        self.call = call

    async def notify(self, message: Message) -> None:
        if message["method"] == "notifications/message":
            if self.call.log_level is None and self.call.modern:
                return  # a 2026-07-28 client that asked for no logs gets none
            if not log_allowed(jsonrpc.params_of(message).get("level"), self.call.log_level):
                return
        await self.call.emit(message)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        _require_capability(self.call, method)
        if self.call.ask is None:
            raise ProtocolError(INVALID_REQUEST, f"cannot relay {method}: the client has no back channel")
        return await self.call.ask(method, params)


async def fulfil(call: Call, result: dict[str, Any]) -> dict[str, Any]:
    """Answer a 2026-07-28 upstream's input requests by asking a handshake-era client.

    Returns the params additions for the retry: `inputResponses` and `requestState`.
    """
    assert call.ask is not None
    requests = result.get("inputRequests") or {}
    if not isinstance(requests, dict):
        raise ProtocolError(INVALID_PARAMS, "upstream sent malformed inputRequests")
    responses: dict[str, Any] = {}
    for key, request in requests.items():
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise ProtocolError(INVALID_PARAMS, "upstream sent a malformed input request")
        _require_capability(call, request["method"])
        params = request.get("params")
        responses[key] = await call.ask(request["method"], params if isinstance(params, dict) else {})
    extra: dict[str, Any] = {"inputResponses": responses}
    if "requestState" in result:
        extra["requestState"] = result["requestState"]
    return extra


# -- 2026-07-28 client, handshake-era upstream --------------------------------------------------


@dataclass(eq=False)
class _Ask:
    method: str
    params: dict[str, Any]
    answered: anyio.Event = field(default_factory=anyio.Event)
    result: dict[str, Any] | None = None
    error: GatewayError | None = None


@dataclass(eq=False)
class _Parked:
    """An upstream call running on after its client was told `input_required`."""

    key: str
    principal_id: str
    events: Any  # memory stream receiver of ("ask", _Ask) | ("done", result | error)
    scope: anyio.CancelScope
    sink: _ParkingSink
    asks: dict[str, _Ask] = field(default_factory=dict)
    expires: float = 0.0


class _ParkingSink:
    """The sink of a parked call: requests from the upstream become `input_required` answers."""

    def __init__(self, call: Call, send: Any) -> None:
        self._inner = CallSink(call)
        self._send = send

    def rebind(self, call: Call) -> None:
        """Progress and logs now go to the request that resumed the call."""
        self._inner = CallSink(call)

    async def notify(self, message: Message) -> None:
        try:
            await self._inner.notify(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the request whose stream carried progress has already been answered

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        _require_capability(self._inner.call, method)
        pending = _Ask(method, params)
        await self._send(("ask", pending))
        await pending.answered.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result


Forward = Callable[[Any], Awaitable[dict[str, Any]]]


class Parking:
    """Upstream calls waiting for a 2026-07-28 client to come back with answers."""

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._parked: dict[str, _Parked] = {}

    @staticmethod
    def owns(params: dict[str, Any]) -> bool:
        state = params.get("requestState")
        return isinstance(state, str) and state.startswith(STATE_PREFIX)

    async def start(self, call: Call, forward: Forward) -> dict[str, Any]:
        """Run `forward(sink)` detached; answer with its result or its first questions."""
        send, receive = anyio.create_memory_object_stream[tuple[str, Any]](16)
        scope = anyio.CancelScope()
        sink = _ParkingSink(call, send.send)
        parked = _Parked(secrets.token_urlsafe(18), call.principal.id, receive, scope, sink)

        async def run() -> None:
            async with send:
                with scope:
                    try:
                        outcome: Any = await forward(sink)
                    except GatewayError as exc:
                        outcome = exc
                    await send.send(("done", outcome))

        self._tg.start_soon(run)
        return await self._next(parked, call)

    async def resume(self, call: Call) -> dict[str, Any]:
        state: str = call.params["requestState"]
        parked = self._parked.pop(state[len(STATE_PREFIX) :], None)
        if parked is None or parked.principal_id != call.principal.id or parked.expires < time.monotonic():
            raise ProtocolError(INVALID_PARAMS, "requestState is unknown or expired: start the call again")
        parked.sink.rebind(call)
        responses = call.params.get("inputResponses") or {}
        if not isinstance(responses, dict):
            raise ProtocolError(INVALID_PARAMS, "inputResponses must be an object")
        for key, pending in parked.asks.items():
            answer = responses.get(key)
            if isinstance(answer, dict):
                pending.result = answer
            else:
                pending.error = ProtocolError(INVALID_REQUEST, "the client did not answer this request")
            pending.answered.set()
        parked.asks = {}
        return await self._next(parked, call)

    async def _next(self, parked: _Parked, call: Call) -> dict[str, Any]:
        try:
            kind, value = await parked.events.receive()
        except anyio.get_cancelled_exc_class():
            parked.scope.cancel()
            parked.events.close()
            raise
        except anyio.EndOfStream:
            parked.events.close()
            raise ProtocolError(INVALID_REQUEST, "the upstream call ended without an answer") from None
        if kind == "done":
            parked.events.close()
            if isinstance(value, GatewayError):
                raise value
            return value  # type: ignore[no-any-return]
        asks = {"r1": value}
        while True:  # gather the questions asked together
            try:
                kind, more = parked.events.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            if kind != "ask":
                break  # cannot happen while asks are unanswered
            asks[f"r{len(asks) + 1}"] = more
        parked.asks = asks
        parked.expires = time.monotonic() + PARK_SECONDS
        self._parked[parked.key] = parked
        self._tg.start_soon(self._expire, parked)
        return {
            "resultType": "input_required",
            "inputRequests": {k: {"method": a.method, "params": a.params} for k, a in asks.items()},
            "requestState": STATE_PREFIX + parked.key,
        }

    async def _expire(self, parked: _Parked) -> None:
        await anyio.sleep(PARK_SECONDS)
        if self._parked.get(parked.key) is parked and parked.expires <= time.monotonic():
            del self._parked[parked.key]
            parked.scope.cancel()
            parked.events.close()
            log.info("a call waiting for client input expired")
