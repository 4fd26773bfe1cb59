"""Relaying what an upstream asks of the client while it serves a call.

Two protocol eras meet here. A handshake-era client can be sent requests mid-call
(`sampling/createMessage`, `elicitation/create`, `roots/list`); a 2026-07-28 client cannot,
and instead receives an `InputRequiredResult`, then retries the call carrying the answers
(multi round trip). The gateway's upstream connection speaks whichever era the upstream
does, so each pairing needs its own bridge:

| client \\ upstream | handshake                    | 2026-07-28                                 |
| ------------------ | ---------------------------- | ------------------------------------------ |
| handshake          | relay the request as it is   | ask the client for each input request, retry |
| 2026-07-28         | park the upstream call, answer `input_required`, resume on retry | pass through, sealed |

A parked call is still the call it was: it stays in the in-flight registry (a kill switch
ends it, and the upstream sees the cancellation), and each resume is a new leg of it,
decided and audited again under its call id, accepted only from the principal that started
it and for the same target. Parked calls live in this process: a client that resumes one
must reach the same replica (see the README on sessions behind a load balancer); each
principal may hold only so many at once, and unclaimed ones expire.

Passed through, an upstream's own `requestState` would let a client replay it under
another tool or as another principal, and would start a new call id on each retry. The
gateway seals it (`Seal`): an HMAC, with a key of this process, over the state and the
principal, target and call id it was issued for; a retry must carry it unchanged, from the
same principal, for the same target, to the same replica.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from .. import jsonrpc
from ..errors import Denied, GatewayError, ProtocolError
from ..jsonrpc import Message
from ..policy_model import Target
from ..protocol import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST
from .session import Call, log_allowed

if TYPE_CHECKING:
    from ..governance import Governance, Ticket

log = logging.getLogger(__name__)

CAPABILITY_FOR = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
STATE_PREFIX = "mcpgw:"
MAX_ROUNDS = 16
NOTIFY_DEADLINE = 0.5
"""Seconds a call's client may hold up the upstream's reader with one notification, once."""
PARK_SECONDS = 600.0
MAX_PARKED_PER_PRINCIPAL = 32
_EXPIRED = "requestState is unknown or expired: start the call again"


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
        self._congested = False

    async def notify(self, message: Message) -> None:
        """Runs in the upstream connection's reader, which every call on that upstream
        shares: a client that does not read its stream gets `NOTIFY_DEADLINE` once, and
        from then on its call's notifications are dropped, not waited for."""
        if message["method"] == "notifications/message":
            if self.call.log_level is None and self.call.modern:
                return  # a 2026-07-28 client that asked for no logs gets none
            if not log_allowed(jsonrpc.params_of(message).get("level"), self.call.log_level):
                return
        if self._congested:
            return
        with anyio.move_on_after(NOTIFY_DEADLINE) as scope:
            await self.call.emit(message)
        if scope.cancelled_caught:
            self._congested = True
            log.info("a client is not reading its stream: its call's notifications are dropped from now on")

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


# -- 2026-07-28 client, 2026-07-28 upstream -------------------------------------------------------

SEALED_PREFIX = "mcpgw-sealed:"


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a sealed `requestState` was issued for, and the upstream's own state inside it."""

    principal_id: str
    target: Target
    call_id: str
    state: Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Seal:
    """Binds an upstream's `requestState` to the principal, target and call it was issued for."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def wrap(self, state: Any, ticket: Ticket) -> str:
        target = ticket.target
        fields = [ticket.principal.id, target.server, target.kind, target.name, ticket.call_id, state]
        payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
        return f"{SEALED_PREFIX}{payload}.{self._mac(payload)}"

    def open(self, sealed: Any) -> Sealed | None:
        """The sealed state's contents; None unless this process sealed it, unchanged."""
        if not isinstance(sealed, str) or not sealed.startswith(SEALED_PREFIX):
            return None
        payload, _, mac = sealed[len(SEALED_PREFIX) :].partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        principal_id, server, kind, name, call_id, state = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
        return Sealed(principal_id, Target(server, kind, name), call_id, state)

    def unseal(self, params: dict[str, Any], ticket: Ticket) -> dict[str, Any]:
        """`params` with the upstream's own state back in, if the retry may carry it."""
        opened = self.open(params["requestState"])
        if opened is None or opened.principal_id != ticket.principal.id:
            raise ProtocolError(INVALID_PARAMS, _EXPIRED)
        if opened.target != ticket.target:
            raise ProtocolError(INVALID_PARAMS, f"requestState belongs to a call of another {opened.target.kind}")
        return {**params, "requestState": opened.state}

    def claim(self, call: Call, target: Target) -> str | None:
        """The call id a retry continues, when it is the same principal's call of the same target."""
        opened = self.open(call.params.get("requestState"))
        if opened is None or opened.principal_id != call.principal.id or opened.target != target:
            return None
        return opened.call_id


# -- 2026-07-28 client, handshake-era upstream --------------------------------------------------


@dataclass(eq=False)
class _Ask:
    method: str
    params: dict[str, Any]
    answered: anyio.Event = field(default_factory=anyio.Event)
    result: dict[str, Any] | None = None
    error: GatewayError | None = None

    def answer(self, result: dict[str, Any] | None, error: GatewayError | None = None) -> None:
        if not self.answered.is_set():
            self.result, self.error = result, error
            self.answered.set()


_Event = tuple[str, Any]
"""("ask", _Ask) while the upstream waits for the client; ("done", result | GatewayError) once."""


@dataclass(eq=False)
class _Parked:
    """An upstream call running on after its client was told `input_required`."""

    key: str
    ticket: Ticket
    """The latest leg's: who, what, under which call id; its completion rows come from it."""
    events: MemoryObjectReceiveStream[_Event]
    scope: anyio.CancelScope
    sink: _ParkingSink
    asks: dict[str, _Ask] = field(default_factory=dict)
    expires: float = 0.0
    attached: bool = True
    """A client request is waiting on the call (false while it waits for a resume)."""
    counted: bool = False
    """It holds one of its principal's places (from its first `input_required` until it ends)."""
    ended: bool = False
    ending: GatewayError | None = None
    """Why the gateway stopped it: what the next resume answers."""
    outcome: dict[str, Any] | GatewayError | None = None
    """How it ended, kept for the next resume when it ended while parked."""

    @property
    def call_id(self) -> str:
        return self.ticket.call_id

    @property
    def arguments(self) -> dict[str, Any] | None:
        return self.ticket.arguments


class _ParkingSink:
    """The sink of a parked call: requests from the upstream become `input_required` answers."""

    def __init__(self, call: Call, send: Callable[[_Event], Awaitable[None]]) -> None:
        self._inner = CallSink(call)
        self._send = send
        self._waiting: set[_Ask] = set()
        self._closed = False

    def rebind(self, call: Call) -> None:
        """Progress and logs now go to the request that resumed the call."""
        self._inner = CallSink(call)

    def close(self) -> None:
        """The call ended: the upstream's questions still open get an error, not a wait forever."""
        self._closed = True
        for pending in self._waiting:
            pending.answer(None, ProtocolError(INVALID_REQUEST, "the call this request belongs to has ended"))

    async def notify(self, message: Message) -> None:
        try:
            await self._inner.notify(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the request whose stream carried progress has already been answered

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        _require_capability(self._inner.call, method)
        if self._closed:
            raise ProtocolError(INVALID_REQUEST, "the call this request belongs to has ended")
        pending = _Ask(method, params)
        self._waiting.add(pending)
        try:
            await self._send(("ask", pending))
            await pending.answered.wait()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ProtocolError(INVALID_REQUEST, "the call this request belongs to has ended") from None
        finally:
            self._waiting.discard(pending)
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result


Forward = Callable[[Any], Awaitable[dict[str, Any]]]


class Parking:
    """Upstream calls waiting for a 2026-07-28 client to come back with answers."""

    def __init__(
        self, tg: TaskGroup, governance: Governance, max_per_principal: int = MAX_PARKED_PER_PRINCIPAL
    ) -> None:
        self._tg = tg
        self._governance = governance
        self._max = max_per_principal
        self._parked: dict[str, _Parked] = {}
        self._held: dict[str, int] = {}
        """Parked calls still running, by principal id: what the cap counts."""

    @staticmethod
    def owns(params: dict[str, Any]) -> bool:
        state = params.get("requestState")
        return isinstance(state, str) and state.startswith(STATE_PREFIX)

    def _find(self, call: Call) -> _Parked | None:
        """The call `call` resumes, if it is its principal's (anyone else learns nothing of it)."""
        parked = self._parked.get(call.params["requestState"][len(STATE_PREFIX) :])
        if parked is None or parked.ticket.principal.id != call.principal.id or parked.expires < time.monotonic():
            return None
        return parked

    def claim(self, call: Call, target: Target) -> _Parked | None:
        """The parked call that `call` continues, when it is the same principal's call of the
        same target: its next leg is decided and audited as part of it. Changes nothing."""
        if not self.owns(call.params):
            return None
        parked = self._find(call)
        return parked if parked is not None and parked.ticket.target == target else None

    async def start(self, call: Call, ticket: Ticket, forward: Forward) -> dict[str, Any]:
        """Run `forward(sink)` detached; answer with its result or its first questions."""
        send, receive = anyio.create_memory_object_stream[_Event](64)
        scope = anyio.CancelScope()
        sink = _ParkingSink(call, send.send)
        parked = _Parked(secrets.token_urlsafe(18), ticket, receive, scope, sink)
        inflight = self._governance.inflight

        async def run() -> None:
            # Registered from inside: the task a kill switch cancels is the one talking upstream.
            flight = inflight.add(ticket.principal, ticket.target)
            outcome: dict[str, Any] | GatewayError = ProtocolError(INVALID_REQUEST, "the upstream call was stopped")
            try:
                try:
                    with scope:
                        try:
                            outcome = await forward(sink)
                        except GatewayError as exc:
                            outcome = exc
                        except Exception:  # the top of a detached task: never let it take the runtime down
                            log.exception("a parked call failed")
                            outcome = ProtocolError(INTERNAL_ERROR, "the gateway failed while serving this call")
                    if scope.cancelled_caught and parked.ending is not None:
                        outcome = parked.ending
                except asyncio.CancelledError:
                    if flight.killed_by is None:
                        raise  # the gateway is shutting down
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                finally:
                    inflight.discard(flight)
                    self._ended(parked)
                if flight.killed_by is not None:
                    outcome = self._governance.kill_error(flight.killed_by)
                    if not parked.attached:  # else the leg waiting on it records the kill
                        self._governance.finish(parked.ticket, "killed", flight.killed_by.id)
                parked.outcome = outcome
                if parked.attached:
                    try:
                        send.send_nowait(("done", outcome))
                    except (anyio.BrokenResourceError, anyio.WouldBlock):
                        pass  # the leg has gone
            finally:
                send.close()
                if not parked.attached:  # nobody is reading: a resume gets `outcome`
                    parked.events.close()

        self._tg.start_soon(run)
        return await self._next(parked, call)

    def _ended(self, parked: _Parked) -> None:
        parked.ended = True
        parked.sink.close()
        if parked.counted:
            parked.counted = False
            principal = parked.ticket.principal.id
            self._held[principal] -= 1
            if not self._held[principal]:
                del self._held[principal]

    async def resume(self, call: Call, ticket: Ticket) -> dict[str, Any]:
        """Continue a parked call with the client's answers; `ticket` is this leg's."""
        parked = self._find(call)
        if parked is None:
            raise ProtocolError(INVALID_PARAMS, _EXPIRED)
        if parked.ticket.target != ticket.target:
            # Left parked: the rightful resume may still come.
            raise ProtocolError(
                INVALID_PARAMS,
                f"requestState belongs to a call of another {parked.ticket.target.kind}: "
                "resume it with the name it was started with",
            )
        responses = call.params.get("inputResponses")
        responses = {} if responses is None else responses
        if not isinstance(responses, dict):
            raise ProtocolError(INVALID_PARAMS, "inputResponses must be an object")
        del self._parked[parked.key]
        parked.ticket = ticket
        parked.sink.rebind(call)
        for key, pending in parked.asks.items():
            answer = responses.get(key)
            if isinstance(answer, dict):
                pending.answer(answer)
            else:
                pending.answer(None, ProtocolError(INVALID_REQUEST, "the client did not answer this request"))
        parked.asks = {}
        return await self._next(parked, call)

    def refuse(self, parked: _Parked, error: GatewayError) -> None:
        """A resume of `parked` was denied: the call ends (the upstream is told), and the
        next resume gets the same answer."""
        if self._parked.get(parked.key) is not parked or parked.ended:
            return
        parked.ending = error
        parked.scope.cancel()
        self._governance.finish(parked.ticket, "cancelled", f"a resume was denied: {error.message}")

    async def _next(self, parked: _Parked, call: Call) -> dict[str, Any]:
        if parked.outcome is not None:  # it ended while parked
            if isinstance(parked.outcome, GatewayError):
                raise parked.outcome
            return parked.outcome
        parked.attached = True
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
        if not parked.counted:
            self._hold(parked)
        parked.asks = asks
        parked.expires = time.monotonic() + PARK_SECONDS
        parked.attached = False
        self._parked[parked.key] = parked
        self._tg.start_soon(self._expire, parked)
        return {
            "resultType": "input_required",
            "inputRequests": {k: {"method": a.method, "params": a.params} for k, a in asks.items()},
            "requestState": STATE_PREFIX + parked.key,
        }

    def _hold(self, parked: _Parked) -> None:
        """Take one of the principal's places for a call about to park, or refuse it."""
        ticket = parked.ticket
        held = self._held.get(ticket.principal.id, 0)
        if held >= self._max:
            error = Denied(
                f"Denied by the gateway: {ticket.principal.id} already has {held} calls waiting for input "
                "(max_parked_calls_per_principal); answer or abandon one first",
                {
                    "reason": "parked_call_limit",
                    "rule_id": None,
                    "policy_version": ticket.decision.policy_version,
                    "kill_switch_id": None,
                },
            )
            parked.ending = error
            parked.scope.cancel()
            parked.events.close()
            raise error
        parked.counted = True
        self._held[ticket.principal.id] = held + 1

    async def _expire(self, parked: _Parked) -> None:
        await anyio.sleep(PARK_SECONDS)
        if self._parked.get(parked.key) is parked and parked.expires <= time.monotonic():
            del self._parked[parked.key]
            parked.events.close()
            if not parked.ended:
                parked.ending = ProtocolError(INVALID_REQUEST, "the client did not come back with answers in time")
                parked.scope.cancel()
                self._governance.finish(
                    parked.ticket, "cancelled", f"no answer from the client within {PARK_SECONDS:g} s"
                )
            log.info("a call waiting for client input expired")
