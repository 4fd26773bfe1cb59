"""Governance on the path of every request: decide, audit, track, record the outcome.

    admit  -> decide from the snapshot; write the decision row and wait for its commit;
              a denial, or a row that cannot be written, stops the request here
    guard  -> run the forward under a cancel scope registered as in flight, so a kill
              switch can end it; classify how it ended
    finish -> queue the completion row (outcome, latency)

Listings go through `visible`, the same decision without the audit, so nothing denied is
listed and nothing listed is denied.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from .audit.redact import ArgumentPolicy
from .audit.writer import AuditUnavailable, AuditWriter
from .errors import Denied, GatewayError, RpcError, UpstreamError, UpstreamTimeout
from .identity import Principal
from .killswitch import Inflight
from .policy.engine import decide
from .policy.model import Decision, Target
from .policy.snapshot import Snapshot, Snapshots

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Ticket:
    """An admitted request, for its completion row."""

    call_id: str
    principal: Principal
    target: Target
    method: str
    decision: Decision
    started: float


class Governance:
    """The decision point, the audit and the kill switch, as the router uses them."""

    def __init__(
        self,
        snapshots: Snapshots,
        writer: AuditWriter,
        arguments: ArgumentPolicy,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.writer = writer
        self.arguments = arguments
        self.inflight = Inflight()
        self.on_change = on_change
        """Called when what clients may see changed (the router's list_changed fan-out)."""
        snapshots.subscribe(self._swapped)

    def decide(self, principal: Principal, target: Target, arguments: dict[str, Any] | None = None) -> Decision:
        return decide(
            self.snapshots.current.policy, principal, target, time.time(), stale=self.snapshots.stale(), arguments=arguments
        )

    def visible(self, principal: Principal, target: Target) -> bool:
        return self.decide(principal, target).allowed

    async def admit(
        self, principal: Principal, target: Target, method: str, arguments: dict[str, Any] | None
    ) -> Ticket:
        """Decide and audit; returns a ticket, or raises `Denied` (policy, kill switch, no audit)."""
        decision = self.decide(principal, target, arguments if method == "tools/call" else None)
        call_id = secrets.token_hex(8)
        stored, hashed = self.arguments.render(arguments)
        row = {
            "ts": time.time(),
            "kind": "decision",
            "call_id": call_id,
            "principal_id": principal.id,
            "team_id": principal.team,
            "server": target.server,
            "tool": target.name,
            "method": method,
            "decision": decision.effect,
            "reason": decision.reason,
            "rule_id": decision.rule_id,
            "policy_version": decision.policy_version,
            "shadow": decision.shadow,
            "shadow_rule_id": decision.shadow_rule_id,
            "arguments": stored,
            "args_digest": hashed,
        }
        try:
            await self.writer.append(row, wait=True)
        except AuditUnavailable:
            if decision.allowed:
                raise
        if not decision.allowed:
            raise Denied(f"Denied by the gateway: {decision.reason}", decision.data())
        return Ticket(call_id, principal, target, method, decision, time.monotonic())

    async def guard(self, ticket: Ticket, forward: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Run an admitted request so a kill switch can stop it; audit how it ended."""
        outcome, detail = "cancelled", None
        try:
            with anyio.CancelScope() as scope, self.inflight.track(ticket.principal, ticket.target, scope) as flight:
                result = await forward()
            if flight.killed_by is not None:
                switch = flight.killed_by
                outcome, detail = "killed", switch.id
                raise Denied(
                    f"Stopped by the gateway: kill switch ({switch.scope}) engaged by {switch.actor}: {switch.reason}",
                    {
                        "reason": "kill_switch",
                        "rule_id": None,
                        "policy_version": self.snapshots.current.policy.policy_version,
                        "kill_switch_id": switch.id,
                    },
                )
            outcome = "tool_error" if result.get("isError") is True else "ok"
            return result
        except UpstreamTimeout as exc:
            outcome, detail = "timeout", exc.message
            raise
        except (UpstreamError, RpcError) as exc:
            outcome, detail = "upstream_error", exc.message
            raise
        except Denied:
            raise
        except GatewayError as exc:
            outcome, detail = "upstream_error", exc.message
            raise
        finally:
            await self.finish(ticket, outcome, detail)

    async def finish(self, ticket: Ticket, outcome: str, detail: str | None = None) -> None:
        row = {
            "ts": time.time(),
            "kind": "completion",
            "call_id": ticket.call_id,
            "principal_id": ticket.principal.id,
            "team_id": ticket.principal.team,
            "server": ticket.target.server,
            "tool": ticket.target.name,
            "method": ticket.method,
            "decision": ticket.decision.effect,
            "rule_id": ticket.decision.rule_id,
            "policy_version": ticket.decision.policy_version,
            "outcome": outcome,
            "latency_ms": round((time.monotonic() - ticket.started) * 1000, 3),
            "detail": detail,
        }
        try:
            with anyio.CancelScope(shield=True):
                await self.writer.append(row, wait=False)
        except AuditUnavailable:
            log.error("audit: completion of call %s (%s) was not recorded", ticket.call_id, outcome)

    async def audit_admin(self, actor: str, action: str, detail: str, *, outcome: str = "ok") -> None:
        """Record an administrative action; raises `AuditUnavailable` if it cannot be written."""
        row = {
            "ts": time.time(),
            "kind": "admin",
            "principal_id": actor,
            "method": action,
            "decision": "allow",
            "policy_version": self.snapshots.current.policy.policy_version,
            "outcome": outcome,
            "detail": detail,
        }
        await self.writer.append(row, wait=True)

    async def _swapped(self, old: Snapshot, new: Snapshot) -> None:
        before = {s.id for s in old.policy.switches}
        engaged = [s for s in new.policy.switches if s.id not in before]
        if engaged:
            killed = self.inflight.kill(engaged)
            if killed:
                log.warning("kill switch %s ended %d call(s) in flight", ", ".join(s.id for s in engaged), killed)
        if self.on_change is not None and (
            engaged
            or new.policy.policy_version != old.policy.policy_version
            or len(new.policy.switches) != len(old.policy.switches)
        ):
            await self.on_change()
