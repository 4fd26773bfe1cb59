"""The decide-audit-forward path every request to an upstream takes (`Forwarding._governed`),
and what it bridges on the way: what an upstream asks of the client mid-call, the eras
(parked calls, sealed request states), a task an upstream makes of a call, and the caller's
signed identity for an upstream that names a header for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import Denied, ProtocolError, UpstreamError
from ..governance import Governance, Ticket
from ..identity import Principal
from ..oauth.assertion import IdentitySigner
from ..policy_model import Target
from ..protocol import INVALID_PARAMS
from . import bridge, payload
from .catalog import exposed_uri
from .relay_tasks import TASKS_CAPS, TaskRegistry, declares_tasks, is_task
from .session import Call
from .upstream import Upstream


class Forwarding:
    """The router's forwarding half: what it needs of the router, and the path itself."""

    governance: Governance
    parking: bridge.Parking
    seal: bridge.Seal
    tasks: TaskRegistry
    identity: IdentitySigner | None
    """Signs the caller's identity for upstreams with an `identity_header`."""

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


def _created_task(method: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """The upstream's `CreateTaskResult`, when a `tools/call` answered with one (read whole
    only then: other answers may be relayed unparsed)."""
    if method != "tools/call" or result.get("resultType") != "task":
        return None
    result = payload.materialize(result)
    return result if is_task(result) else None


def map_block(upstream: Upstream, block: dict[str, Any]) -> dict[str, Any]:
    """Give a content block's resource URI its gateway name, so a client can read it back."""
    kind = block.get("type")
    if kind == "resource_link" and isinstance(block.get("uri"), str):
        return {**block, "uri": exposed_uri(upstream, block["uri"])}
    if kind == "resource" and isinstance(block.get("resource"), dict):
        resource = block["resource"]
        if isinstance(resource.get("uri"), str):
            return {**block, "resource": {**resource, "uri": exposed_uri(upstream, resource["uri"])}}
    return block


def map_content_uris(upstream: Upstream, result: dict[str, Any]) -> dict[str, Any]:
    content = result.get("content")
    if upstream.namespace and isinstance(content, list):
        result["content"] = [map_block(upstream, b) if isinstance(b, dict) else b for b in content]
    return result
