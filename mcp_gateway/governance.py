"""Governance on the path of every request: decide, audit, track, record the outcome.

    call   -> decide from the snapshot; register the call as in flight; write the
              decision row and wait for its commit (a denial, or a row that cannot be
              written, stops the request here); forward, so that a kill switch can end
              it; queue the completion row (outcome, latency). A call answered
              `input_required` and resumed later is one call in several legs: each leg
              is decided and audited again under the first leg's call id
    admit  -> the same decision and audit for requests that are not forwarded calls
    refuse_unknown -> a denial row for a request naming nothing the gateway serves

Listings go through `visible`, the same decision without the audit, so nothing denied is
listed and nothing listed is denied.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn

from .audit.redact import ArgumentPolicy
from .audit.writer import AuditWriter
from .errors import AuditUnavailable, Denied, GatewayError, UpstreamTimeout
from .identity import Principal
from .killswitch import PRINCIPAL_SCOPES, Inflight
from .observe.observer import Observer
from .policy.engine import decide
from .policy.snapshot import PolicySnapshot, Snapshots
from .policy_model import Decision, KillSwitch, Kind, Target
from .roles import Role

log = logging.getLogger(__name__)

_MAX_NAME = 256
"""The audit's `tool` column: a longer name (the caller chose it) is cut, never refused by the
store, which would fail the whole group commit it shares with other callers' rows."""
_MAX_TEXT = 4096


def _fit(value: str | None, limit: int) -> str | None:
    return value if value is None or len(value) <= limit else value[: limit - 1] + "…"


_ids = random.Random()
"""Call ids correlate an audit log's rows; they are not secrets, so they need not cost a
system call each (seeded from the OS once, 64 bits: unique enough across replicas)."""


class Answered(Exception):
    """Raised by a call's `forward` to answer it without going upstream (arguments that do
    not fit the tool's schema): `result` is the answer, or `error` is raised instead; the
    completion row records `outcome` and `detail`."""

    def __init__(
        self,
        outcome: str,
        detail: str,
        *,
        result: dict[str, Any] | None = None,
        error: GatewayError | None = None,
    ) -> None:
        super().__init__(detail)
        self.outcome, self.detail, self.result, self.error = outcome, detail, result, error


@dataclass(eq=False)
class Ticket:
    """An admitted request, for its completion row."""

    call_id: str
    principal: Principal
    target: Target
    method: str
    decision: Decision
    started: float
    arguments: dict[str, Any] | None = None
    """What the decision was made on: a later leg of the same call is decided on them again."""
    detached: bool = False
    """The call answered with a task that runs on: whoever took it over writes its completion."""


class Governance:
    """The decision point, the audit and the kill switch, as the router uses them."""

    def __init__(
        self,
        snapshots: Snapshots,
        writer: AuditWriter,
        arguments: ArgumentPolicy,
        on_change: Callable[[], Coroutine[Any, Any, None]] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.observer = observer or Observer()
        """Told each decision and outcome (metrics, the request's span, the access line)."""
        self.writer = writer
        self.arguments = arguments
        self.inflight = Inflight()
        self._expiries: list[asyncio.TimerHandle] = []
        self._background: set[asyncio.Task[None]] = set()
        self.on_change = on_change
        """Called when what clients may see changed (the router's list_changed fan-out)."""
        snapshots.subscribe(self._swapped)

    def decide(self, principal: Principal, target: Target, arguments: dict[str, Any] | None = None) -> Decision:
        return decide(
            self.snapshots.current.policy,
            principal,
            target,
            time.time(),
            stale=self.snapshots.stale(),
            arguments=arguments,
        )

    def visible(self, principal: Principal, target: Target) -> bool:
        return self.decide(principal, target).allowed

    def stopped(self, principal: Principal) -> Denied | None:
        """Why `principal` may open no stream now, if it may not: a switch that stops it
        whatever it reaches (global, team, principal), or its key revoked meanwhile."""
        current = self.snapshots.current
        now = time.time()
        for switch in current.policy.switches:
            if switch.scope in PRINCIPAL_SCOPES and switch.active(now) and switch.matches(principal, None):
                return Denied(
                    f"Denied by the gateway: kill switch ({switch.scope}) engaged by {switch.actor}: {switch.reason}",
                    {
                        "reason": "kill_switch",
                        "rule_id": None,
                        "policy_version": current.policy.policy_version,
                        "kill_switch_id": switch.id,
                    },
                )
        if principal.key_id is not None and principal.key_id not in current.keys:
            return Denied("The API key is no longer valid", {"reason": "invalid API key"})
        return None

    def _decision_row(
        self, principal: Principal, target: Target, method: str, decision: Decision, call_id: str, arguments: Any
    ) -> dict[str, Any]:
        stored, hashed = self.arguments.render(arguments)
        return {
            "ts": time.time(),
            "kind": "decision",
            "call_id": call_id,
            "principal_id": principal.id,
            "team_id": principal.team,
            "subject": principal.subject,
            "issuer": principal.issuer,
            "server": target.server,
            "tool": _fit(target.name, _MAX_NAME),
            "method": method,
            "decision": decision.effect,
            "reason": _fit(decision.reason, _MAX_TEXT),
            "rule_id": decision.rule_id,
            "policy_version": decision.policy_version,
            "shadow": decision.shadow,
            "shadow_rule_id": decision.shadow_rule_id,
            "arguments": stored,
            "args_digest": hashed,
        }

    def _judge(
        self,
        principal: Principal,
        target: Target,
        method: str,
        arguments: dict[str, Any] | None,
        call_id: str | None = None,
    ) -> tuple[Decision, str, dict[str, Any]]:
        """The decision, a call id (a new one unless this continues a call), and the decision's audit row."""
        decision = self.decide(principal, target, arguments if method == "tools/call" else None)
        self.observer.decided(target, decision)
        call_id = call_id or f"{_ids.getrandbits(64):016x}"
        return decision, call_id, self._decision_row(principal, target, method, decision, call_id, arguments)

    @staticmethod
    def denial(decision: Decision) -> Denied:
        """What a denied request answers."""
        return Denied(f"Denied by the gateway: {decision.reason}", decision.data())

    def refusal(self, principal: Principal, target: Target) -> Denied | None:
        """Why `principal` may not reach `target` now, or None: for what was admitted a
        while ago (a subscription after its audit wait), before it is taken further."""
        stopped = self.stopped(principal)  # a revoked key too, which no decision sees
        if stopped is not None:
            return stopped
        decision = self.decide(principal, target)
        return None if decision.allowed else self.denial(decision)

    async def _refuse(self, decision: Decision, row: dict[str, Any], target: Target) -> NoReturn:
        """Audit a denial if the audit can take it, and deny either way."""
        try:
            with self.observer.audit_wait():
                await self.writer.append(row)
        except AuditUnavailable:
            pass
        finally:
            self.observer.completed(target, row["team_id"], row["method"], "deny", "denied")
        raise self.denial(decision)

    async def admit(
        self, principal: Principal, target: Target, method: str, arguments: dict[str, Any] | None
    ) -> Ticket:
        """Decide and audit, for a request that is not forwarded as a call (e.g. a subscription)."""
        decision, call_id, row = self._judge(principal, target, method, arguments)
        if not decision.allowed:
            await self._refuse(decision, row, target)
        try:
            with self.observer.audit_wait():
                await self.writer.append(row)
        except AuditUnavailable:
            self.observer.unaudited(target, principal.team, method)
            raise
        return Ticket(call_id, principal, target, method, decision, time.monotonic())

    async def refuse_unknown(
        self,
        principal: Principal,
        kind: Kind,
        name: Any,
        method: str,
        arguments: dict[str, Any] | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        """Audit, as a denial, a request for a tool, prompt or resource the gateway does not
        serve (or that names none), so probing for names is as visible as using them. No rule
        decided it (`rule_id` is null); the caller answers with the protocol's own error.
        `reason` says why instead of "no such ..." (a request refused before any decision)."""
        shown = name if isinstance(name, str) else None
        shown = _fit(shown, _MAX_NAME)
        if reason is None:
            reason = f"no such {kind}" if shown is not None else f"the request names no {kind}"
        decision = Decision("deny", reason, None, self.snapshots.current.policy.policy_version)
        call_id = f"{_ids.getrandbits(64):016x}"
        nothing = Target("", kind, shown or "")
        self.observer.decided(nothing, decision)
        row = self._decision_row(principal, nothing, method, decision, call_id, arguments)
        row["server"], row["tool"] = None, shown
        try:
            with self.observer.audit_wait():
                await self.writer.append(row)
        except AuditUnavailable:
            log.error("audit: a %s request for an unknown %s was not recorded", method, kind)
        finally:
            self.observer.completed(nothing, principal.team, method, "deny", "denied")

    async def call(
        self,
        principal: Principal,
        target: Target,
        method: str,
        arguments: dict[str, Any] | None,
        forward: Callable[[Ticket], Awaitable[dict[str, Any]]],
        *,
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Decide, audit the decision (and wait for its commit), forward under the kill
        switch's watch, and audit how it ended. Raises `Denied` for a denial, a kill or a
        decision that could not be audited. `call_id` names the call a resume continues;
        `forward` gets this leg's ticket."""
        decision, call_id, row = self._judge(principal, target, method, arguments, call_id)
        if not decision.allowed:
            await self._refuse(decision, row, target)
        ticket = Ticket(call_id, principal, target, method, decision, time.monotonic(), arguments)
        # In flight from before the audit wait: a switch engaged meanwhile must find this call.
        flight = self.inflight.add(principal, target)
        outcome, detail = "cancelled", None
        try:
            with self.observer.audit_wait():
                await self.writer.append(row)  # no audit, no call
            result = await forward(ticket)
            if result.get("resultType") == "input_required":
                outcome = "input_required"  # this leg ended; the call goes on when the client answers
            elif ticket.detached:
                outcome = ""  # runs on upstream as a task: the task registry records how it ends
            else:
                outcome = "tool_error" if result.get("isError") is True else "ok"
            return result
        except Answered as answered:
            outcome, detail = answered.outcome, answered.detail
            if answered.error is not None:
                raise answered.error from None
            return answered.result or {}
        except asyncio.CancelledError:
            switch = flight.killed_by
            if switch is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            outcome, detail = "killed", switch.id
            raise self.kill_error(switch) from None
        except AuditUnavailable:
            outcome = ""  # not admitted: nothing to complete
            self.observer.unaudited(target, principal.team, method)
            raise
        except Denied as exc:  # stopped on the way: a kill that reached it elsewhere, or a limit
            killed = (exc.data or {}).get("reason") == "kill_switch"
            outcome, detail = ("killed", (exc.data or {}).get("kill_switch_id")) if killed else ("refused", exc.message)
            raise
        except UpstreamTimeout as exc:
            outcome, detail = "timeout", exc.message
            raise
        except GatewayError as exc:  # the upstream failed, or answered with an error
            outcome, detail = "upstream_error", exc.message
            raise
        except Exception as exc:  # the gateway's own failure: on record as one, not as a cancellation
            outcome, detail = "error", type(exc).__name__
            raise
        finally:
            self.inflight.discard(flight)
            if outcome:
                self.finish(ticket, outcome, detail)

    def kill_error(self, switch: KillSwitch) -> Denied:
        """What a call ended by `switch` answers."""
        return Denied(
            f"Stopped by the gateway: kill switch ({switch.scope}) engaged by {switch.actor}: {switch.reason}",
            {
                "reason": "kill_switch",
                "rule_id": None,
                "policy_version": self.snapshots.current.policy.policy_version,
                "kill_switch_id": switch.id,
            },
        )

    def finish(self, ticket: Ticket, outcome: str, detail: str | None = None) -> None:
        """Queue the completion row; the caller does not wait for its commit."""
        row = {
            "ts": time.time(),
            "kind": "completion",
            "call_id": ticket.call_id,
            "principal_id": ticket.principal.id,
            "team_id": ticket.principal.team,
            "subject": ticket.principal.subject,
            "issuer": ticket.principal.issuer,
            "server": ticket.target.server,
            "tool": _fit(ticket.target.name, _MAX_NAME),
            "method": ticket.method,
            "decision": ticket.decision.effect,
            "rule_id": ticket.decision.rule_id,
            "policy_version": ticket.decision.policy_version,
            "outcome": outcome,
            "latency_ms": round((time.monotonic() - ticket.started) * 1000, 3),
            "detail": _fit(detail, _MAX_TEXT),
        }
        self.observer.completed(ticket.target, ticket.principal.team, ticket.method, ticket.decision.effect, outcome)
        try:
            self.writer.append_nowait(row)
        except AuditUnavailable:
            log.error("audit: completion of call %s (%s) was not recorded", ticket.call_id, outcome)

    async def audit_admin(
        self, actor: str, action: str, detail: str, *, outcome: str = "ok", role: Role | None = None
    ) -> None:
        """Record an administrative action; raises `AuditUnavailable` if it cannot be written.
        `role`: the admin API role the actor acted with (in `reason`: `role operator`)."""
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
        if role is not None:
            row["reason"] = f"role {role}"
        await self.writer.append(row)

    async def audit_refused_identity(self, subject: str, issuer: str, reason: str) -> None:
        """Record a caller the identity provider vouched for but the gateway refused (its
        token maps to no team); best effort, the refusal stands either way."""
        row = {
            "ts": time.time(),
            "kind": "auth",
            "method": "authenticate",
            "decision": "deny",
            "reason": _fit(reason, _MAX_TEXT),
            "subject": _fit(subject, 256),
            "issuer": _fit(issuer, 512),
            "policy_version": self.snapshots.current.policy.policy_version,
        }
        try:
            await self.writer.append(row)
        except AuditUnavailable:
            log.warning("audit unavailable: refused identity %r (%s) not audited: %s", subject, issuer, reason)

    async def audit_admin_refusal(self, actor: str, role: Role, detail: str) -> None:
        """Record that an admin request was refused for too small a role, so an operator
        reaching beyond their role is visible. The caller waits for the commit, as an agent
        waits for its decision's row (so one caller cannot flood the audit queue); a row
        that cannot be written is logged (the request is refused either way)."""
        row = {
            "ts": time.time(),
            "kind": "admin",
            "principal_id": actor,
            "method": "forbidden",
            "decision": "deny",
            "reason": f"role {role}",
            "policy_version": self.snapshots.current.policy.policy_version,
            "outcome": "forbidden",
            "detail": detail,
        }
        try:
            await self.writer.append(row)
        except AuditUnavailable as exc:
            log.warning("admin refusal of %s not audited: %s", actor, exc)

    def _watch_expiries(self, snapshot: PolicySnapshot) -> None:
        """When a switch expires, what clients may see changes: tell them then."""
        for handle in self._expiries:
            handle.cancel()
        loop = asyncio.get_running_loop()
        now, wall = loop.time(), time.time()
        self._expiries = [
            loop.call_at(now + max(0.0, s.expires_at - wall) + 0.01, self._expired)
            for s in snapshot.policy.switches
            if s.expires_at is not None
        ]

    def _expired(self) -> None:
        if self.on_change is not None:
            task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self.on_change())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _swapped(self, old: PolicySnapshot, new: PolicySnapshot) -> None:
        self._watch_expiries(new)
        # A key that left the snapshot was revoked (or its principal disabled): what it
        # opened ends now, as under a principal kill switch, not when it next asks.
        revoked_keys = old.keys.keys() - new.keys.keys()
        gone_principals = old.principals.keys() - new.principals.keys()
        if revoked_keys or gone_principals:
            ended = self.inflight.revoke(set(revoked_keys), set(gone_principals))
            if ended:
                log.warning("revocation ended %d call(s) and stream(s)", ended)
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
