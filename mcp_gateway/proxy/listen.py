"""Following what changes: resource subscriptions (`resources/subscribe` on a handshake-era
session), 2026-07-28 `subscriptions/listen` streams (`Listener`), the per-principal limits on
both, and the delivery of resource updates to whoever follows them, decided at delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from .. import jsonrpc
from ..errors import GatewayError, ProtocolError
from ..governance import Governance, Ticket
from ..identity import Principal
from ..jsonrpc import Message
from ..killswitch import Opened
from ..limits import LimitReached, Limits
from ..policy_model import Target
from ..protocol import INVALID_PARAMS, RESOURCE_NOT_FOUND, SUBSCRIPTION_ID_META_KEY
from .catalog import Catalog, exposed_uri
from .session import Call, Session
from .subscriptions import RESOURCES, Subscriptions, listen_filter
from .upstream import Upstream

log = logging.getLogger(__name__)


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


class Following:
    """The router's half that admits, holds and ends subscriptions and listen streams."""

    catalog: Catalog
    governance: Governance
    subscriptions: Subscriptions
    listeners: set[Listener]
    limits: Limits
    _tg: TaskGroup

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
                await deliver_quietly(holder.send(message))


async def deliver_quietly(sending: Awaitable[Any]) -> None:
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
