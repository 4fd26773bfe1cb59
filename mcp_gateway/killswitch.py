"""Stopping calls: the registry of calls in flight, and what engaging a switch does to them.

Every forwarded request is registered with its principal, its target and the task that
runs it. When a snapshot arrives with a switch that was not engaged before (through this
replica's admin API or another's), each matching call's task is cancelled and marked
killed: the upstream sees the cancellation, the agent gets the kill error, the audit
records `killed`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .identity import Principal
from .policy.model import KillSwitch, Target


@dataclass(eq=False, slots=True)
class Flight:
    principal: Principal
    target: Target
    task: asyncio.Task[object] | None
    killed_by: KillSwitch | None = None


class Inflight:
    """The calls this process is forwarding right now."""

    def __init__(self) -> None:
        self._flights: set[Flight] = set()

    def __len__(self) -> int:
        return len(self._flights)

    def add(self, principal: Principal, target: Target) -> Flight:
        flight = Flight(principal, target, asyncio.current_task())
        self._flights.add(flight)
        return flight

    def discard(self, flight: Flight) -> None:
        self._flights.discard(flight)

    def kill(self, switches: list[KillSwitch], now: float | None = None) -> int:
        """Cancel every call a newly engaged switch covers; returns how many."""
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
        return killed
