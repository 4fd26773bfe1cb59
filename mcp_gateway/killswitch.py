"""Stopping what is open: the registry of calls in flight and of open streams, and what
engaging a switch or revoking a credential does to them.

Every forwarded request is registered with its principal, its target and the task that
runs it. When a snapshot arrives with a switch that was not engaged before (through this
replica's admin API or another's), each matching call's task is cancelled and marked
killed: the upstream sees the cancellation, the agent gets the kill error, the audit
records `killed`.

Open streams (a handshake session's GET stream, a 2026-07-28 listen stream) and
handshake sessions are registered too, with a way to end them. A stream belongs to no
server or tool, so only switches that stop a principal (global, team, principal) end it;
server and tool switches filter what it delivers, decided per message. A stream opened with
an access token also ends when that token expires. Revoking a key or
disabling a principal ends everything that credential opened, calls included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .identity import Principal
from .policy_model import KillSwitch, Target

Ending = Literal["killed", "revoked"]
OpenKind = Literal["stream", "session"]
PRINCIPAL_SCOPES = frozenset({"global", "team", "principal"})
"""The switches that stop a principal as a whole, whatever it reaches."""


@dataclass(eq=False, slots=True)
class Flight:
    principal: Principal
    target: Target
    task: asyncio.Task[object] | None
    killed_by: KillSwitch | None = None
    started: float = 0.0
    """Wall-clock time it was registered (for operators' views)."""


@dataclass(eq=False, slots=True)
class Opened:
    """Something a client holds open: a stream, or a handshake session (which owns subscriptions)."""

    principal: Principal
    kind: OpenKind
    end: Callable[[Ending], None]
    """Ends it now (synchronously: it may only signal, the owner's task does the cleanup)."""
    ended: Ending | None = None
    expiry: asyncio.TimerHandle | None = None
    """Ends a stream when the access token that opened it expires."""


def revocation(principal: Principal, now: float) -> KillSwitch:
    """What a call ended by revocation reports: a principal-scoped stop by the gateway itself."""
    what = f"key {principal.key_id}" if principal.key_id else f"principal {principal.id}"
    return KillSwitch(
        id=f"revoked:{principal.key_id or principal.id}",
        scope="principal",
        target=principal.id,
        reason=f"{what} was revoked or disabled",
        actor="gateway",
        created_at=now,
    )


class Inflight:
    """The calls this process is forwarding right now, and what clients hold open."""

    def __init__(self) -> None:
        self._flights: set[Flight] = set()
        self._opened: set[Opened] = set()

    def __len__(self) -> int:
        """Calls in flight (open streams and sessions are counted by `open_count`)."""
        return len(self._flights)

    def add(self, principal: Principal, target: Target) -> Flight:
        flight = Flight(principal, target, asyncio.current_task(), started=time.time())
        self._flights.add(flight)
        return flight

    def flights(self) -> list[Flight]:
        """The calls in flight now, oldest first."""
        return sorted(self._flights, key=lambda f: f.started)

    def discard(self, flight: Flight) -> None:
        self._flights.discard(flight)

    def open(self, principal: Principal, kind: OpenKind, end: Callable[[Ending], None]) -> Opened:
        """Register something a client holds open; `close` it when it ends. A stream opened
        with an access token ends when the token expires (a session does not: the client's
        next request brings a fresh token, checked then)."""
        opened = Opened(principal, kind, end)
        self._opened.add(opened)
        if kind == "stream" and principal.expires_at is not None:
            delay = max(0.0, principal.expires_at - time.time())
            opened.expiry = asyncio.get_running_loop().call_later(delay, self._expire, opened)
        return opened

    def close(self, opened: Opened) -> None:
        self._opened.discard(opened)
        if opened.expiry is not None:
            opened.expiry.cancel()

    def _expire(self, opened: Opened) -> None:
        if opened in self._opened and opened.ended is None:
            self._end(opened, "revoked")

    def open_count(self, principal_id: str | None = None, kind: OpenKind = "stream") -> int:
        """How many of `kind` are open (for one principal, when given)."""
        return sum(
            1 for o in self._opened if o.kind == kind and (principal_id is None or o.principal.id == principal_id)
        )

    def kill(self, switches: list[KillSwitch], now: float | None = None) -> int:
        """Cancel every call a newly engaged switch covers, and end the streams of every
        principal one stops as a whole; returns how many calls and streams were ended."""
        now = time.time() if now is None else now
        killed = 0
        for flight in list(self._flights):
            if flight.killed_by is not None or flight.task is None:
                continue
            for switch in switches:
                if switch.active(now) and switch.matches(flight.principal, flight.target):
                    flight.killed_by = switch
                    flight.task.cancel()
                    killed += 1
                    break
        stops = [s for s in switches if s.scope in PRINCIPAL_SCOPES and s.active(now)]
        for opened in list(self._opened):
            # A session outlives a kill (only its subscriptions go), so a later switch reaches it again.
            live = opened.ended is None or opened.kind == "session"
            if live and any(s.matches(opened.principal, None) for s in stops):
                killed += self._end(opened, "killed")
        return killed

    def revoke(self, key_ids: set[str], principal_ids: set[str], now: float | None = None) -> int:
        """End every call and everything open that a revoked key or a disabled (or removed)
        principal made; returns how many."""
        now = time.time() if now is None else now

        def gone(principal: Principal) -> bool:
            return principal.id in principal_ids or (principal.key_id is not None and principal.key_id in key_ids)

        ended = 0
        for flight in list(self._flights):
            if flight.killed_by is None and flight.task is not None and gone(flight.principal):
                flight.killed_by = revocation(flight.principal, now)
                flight.task.cancel()
                ended += 1
        for opened in list(self._opened):
            if opened.ended != "revoked" and gone(opened.principal):
                ended += self._end(opened, "revoked")
        return ended

    @staticmethod
    def _end(opened: Opened, how: Ending) -> int:
        opened.ended = how
        opened.end(how)
        return 1
