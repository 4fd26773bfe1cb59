"""Tasks (the `io.modelcontextprotocol/tasks` extension, SEP-2663) relayed through the gateway.

An upstream that supports the extension may answer a `tools/call` with a `CreateTaskResult`
(`resultType: "task"`) and run the tool on after the call has answered. The gateway keeps
such a task governed for its whole life:

- **Created as a call.** The `tools/call` was decided and audited like any other before it
  went upstream; its completion row is written when the task ends, not when it was created.
- **Named by the gateway.** The client sees a gateway task id (random, unguessable); the
  registry maps it to (upstream, the upstream's id), so two upstreams' ids never collide
  and a client can only name tasks that the gateway gave it.
- **Owned.** `tasks/get`, `tasks/update` and `tasks/cancel` reach a task only for the
  principal that created it; for anyone else the task does not exist (the not-found error,
  audited as a refusal).
- **Stoppable.** While it runs, each task is watched by a task of the gateway registered in
  the kill switch's in-flight registry under the task's principal and tool: a matching
  switch (tool, server, team, principal, global) or a revocation cancels the watcher, which
  sends `tasks/cancel` upstream and audits the task `killed`. The watcher also polls the
  upstream now and then, so a task nobody asks about still has its end audited.
- **Both eras.** A 2026-07-28 client declares the extension and the upstream decides; a
  handshake-era (2025-11-25) client asks for a task with `params.task` and gets the 2025-11-25
  surface, translated by the gateway over the same upstream task: `CreateTaskResult.task`,
  `tasks/get`, `tasks/result` (waits, relaying what the task asks of the client),
  `tasks/list` (the caller's own tasks only), `tasks/cancel`, and
  `notifications/tasks/status` sent to the session that created the task and to no other.
- **Bounded.** At most `max_tasks_per_principal` records per principal (a finished record
  gives its place to a new task; running ones refuse it), and a finished task's record is
  dropped `task_record_ttl` seconds after it ended.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .. import jsonrpc
from ..errors import GatewayError
from ..governance import Governance, Ticket
from ..identity import Principal
from ..killswitch import revocation
from ..limits import LimitReached
from ..policy_model import KillSwitch, Target
from ..protocol import TASKS_EXTENSION
from .session import Session
from .upstream import Upstream

log = logging.getLogger(__name__)

TASK_METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
HANDSHAKE_TASK_METHODS = frozenset({"tasks/result", "tasks/list"})
"""The 2025-11-25 methods the extension removed: served to handshake-era clients only."""
HANDSHAKE_CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
"""`capabilities.tasks` at initialize (2025-11-25)."""
TERMINAL = frozenset({"completed", "failed", "cancelled"})
MIN_POLL = 0.25
MAX_POLL = 5.0
CANCEL_TIMEOUT = 10.0


def declares_tasks(capabilities: dict[str, Any]) -> bool:
    """Whether a client's capabilities declare the tasks extension."""
    extensions = capabilities.get("extensions")
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def is_task(result: dict[str, Any]) -> bool:
    return result.get("resultType") == "task" and isinstance(result.get("taskId"), str)


@dataclass(eq=False)
class RelayedTask:
    """One task an upstream runs for a principal, under the gateway's id."""

    id: str
    upstream: Upstream
    upstream_id: str
    principal: Principal
    target: Target
    ticket: Ticket
    poll: float = 1.0
    status: str = "working"
    ended_at: float | None = None
    killed_by: KillSwitch | None = None
    changed: anyio.Event = field(default_factory=anyio.Event)
    session: Session | None = None
    """The handshake session that created it, for its status notifications (none at 2026-07-28)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """What the upstream last said of it (times, ttl, poll interval, message)."""

    def handshake(self) -> dict[str, Any]:
        """The task as 2025-11-25 shapes it (`Task`)."""
        d = self.detail
        task: dict[str, Any] = {
            "taskId": self.id,
            "status": self.status,
            "createdAt": d.get("createdAt", ""),
            "lastUpdatedAt": d.get("lastUpdatedAt", d.get("createdAt", "")),
            "ttl": d.get("ttlMs"),
        }
        if isinstance(d.get("pollIntervalMs"), int):
            task["pollInterval"] = d["pollIntervalMs"]
        if self.killed_by is not None:
            task["statusMessage"] = f"stopped by the gateway: kill switch {self.killed_by.id}"
        elif isinstance(d.get("statusMessage"), str):
            task["statusMessage"] = d["statusMessage"]
        return task

    def learn(self, result: dict[str, Any]) -> bool:
        """Take in an upstream answer about the task; True when its status changed."""
        self.detail.update({k: result[k] for k in _DETAIL_KEYS if k in result})
        status = result.get("status")
        if not isinstance(status, str) or status == self.status or not self.running:
            return False
        self.status = status
        return True

    @property
    def running(self) -> bool:
        return self.ended_at is None


class TaskRegistry:
    """The relayed tasks of this process, by gateway id."""

    def __init__(self, governance: Governance, tg: TaskGroup, max_per_principal: int = 32, ttl: float = 3600.0) -> None:
        self.governance = governance
        self.max_per_principal = max_per_principal
        self.ttl = ttl
        self._tg = tg
        self._tasks: dict[str, RelayedTask] = {}
        self._pending: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def _held(self, principal_id: str) -> list[RelayedTask]:
        return [t for t in self._tasks.values() if t.principal.id == principal_id]

    def reserve(self, principal: Principal) -> None:
        """Hold a place for a task `principal` may be about to create (a call that may become
        one); raises `LimitReached` when its running tasks fill the limit. `release` after."""
        held = self._held(principal.id)
        running = sum(1 for t in held if t.running) + self._pending.get(principal.id, 0)
        if running >= self.max_per_principal:
            raise LimitReached("max_tasks_per_principal", self.max_per_principal, "tasks")
        self._pending[principal.id] = self._pending.get(principal.id, 0) + 1

    def release(self, principal: Principal) -> None:
        left = self._pending.get(principal.id, 0) - 1
        if left > 0:
            self._pending[principal.id] = left
        else:
            self._pending.pop(principal.id, None)

    def register(
        self, upstream: Upstream, ticket: Ticket, result: dict[str, Any], session: Session | None = None
    ) -> RelayedTask:
        """Take over a task the upstream created for `ticket`'s call (`session`: the handshake
        session to tell of its status changes)."""
        principal = ticket.principal
        held = self._held(principal.id)
        if len(held) >= self.max_per_principal:
            # Memory stays bounded: the oldest finished record gives way (running ones were
            # counted by `reserve` before the call went upstream).
            finished = sorted((t for t in held if not t.running), key=lambda t: t.ended_at or 0.0)
            for old in finished[: len(held) - self.max_per_principal + 1]:
                self._tasks.pop(old.id, None)
        poll_ms = result.get("pollIntervalMs")
        poll = poll_ms / 1000 if isinstance(poll_ms, int | float) and poll_ms > 0 else 1.0
        task = RelayedTask(
            id=secrets.token_urlsafe(18),
            upstream=upstream,
            upstream_id=result["taskId"],
            principal=principal,
            target=ticket.target,
            ticket=ticket,
            poll=min(max(poll, MIN_POLL), MAX_POLL),
            session=session,
        )
        task.learn(result)
        ticket.detached = True
        self._tasks[task.id] = task
        self._tg.start_soon(self._watch, task)
        return task

    def abandon(self, upstream: Upstream, upstream_id: str) -> None:
        """Cancel upstream a task the gateway does not take over."""
        self._tg.start_soon(self._cancel_at, upstream, upstream_id)

    def listed(self, principal: Principal) -> list[RelayedTask]:
        """`principal`'s own tasks, oldest first."""
        return sorted(self._held(principal.id), key=lambda t: t.detail.get("createdAt", ""))

    def owned(self, principal: Principal, task_id: Any) -> RelayedTask | None:
        """The task `task_id` if `principal` created it (anyone else: None, as for no task)."""
        task = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if task is None or task.principal.id != principal.id:
            return None
        return task

    def observed(self, task: RelayedTask, result: dict[str, Any]) -> dict[str, Any]:
        """A `tasks/get` answer from upstream, as the client sees it (and what it says about the task)."""
        if task.learn(result) and task.status in TERMINAL:
            task.changed.set()  # the watcher records the end now
        if "taskId" in result:
            result = {**result, "taskId": task.id}
        return result

    # -- the watcher -----------------------------------------------------------------------

    async def _watch(self, task: RelayedTask) -> None:
        """Keep the task reachable by the kill switch while it runs, and audit how it ended."""
        inflight = self.governance.inflight
        flight = inflight.add(task.principal, task.target)
        outcome, detail = "cancelled", None
        try:
            # A switch or revocation may have come while the call was answering.
            if _switch_of(self.governance, task) is not None:
                raise asyncio.CancelledError
            outcome, detail = await self._until_ended(task)
        except asyncio.CancelledError:
            switch = flight.killed_by or _switch_of(self.governance, task)
            if switch is None:
                raise  # the gateway is shutting down
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            task.killed_by = switch
            outcome, detail = "killed", switch.id
            await self._cancel_upstream(task)
            task.status = "cancelled"
            with anyio.CancelScope(shield=True):
                await self._tell(task)
        finally:
            inflight.discard(flight)
            task.ended_at = time.monotonic()
            self.governance.finish(task.ticket, outcome, detail)
            asyncio.get_running_loop().call_later(self.ttl, self._drop, task)

    async def _until_ended(self, task: RelayedTask) -> tuple[str, str | None]:
        failures = 0
        while True:
            with anyio.move_on_after(task.poll):
                await task.changed.wait()
            task.changed = anyio.Event()
            try:
                result = await task.upstream.call(
                    "tasks/get", {"taskId": task.upstream_id}, client_caps=TASKS_CAPS, timeout=CANCEL_TIMEOUT
                )
            except GatewayError as exc:
                failures += 1
                if failures >= 5:  # the upstream lost it (restarted) or keeps failing: ended for us
                    task.status = "failed"
                    return "upstream_error", exc.message
                continue
            failures = 0
            if task.learn(result):
                await self._tell(task)
            status = result.get("status")
            if status == "completed":
                inner = result.get("result")
                return ("tool_error" if isinstance(inner, dict) and inner.get("isError") is True else "ok"), None
            if status == "failed":
                error = result.get("error")
                message = error.get("message") if isinstance(error, dict) else None
                return "upstream_error", message if isinstance(message, str) else "task failed"
            if status == "cancelled":
                return "cancelled", None

    async def _cancel_upstream(self, task: RelayedTask) -> None:
        await self._cancel_at(task.upstream, task.upstream_id)

    async def _cancel_at(self, upstream: Upstream, upstream_id: str) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_TIMEOUT):
            try:
                await upstream.call(
                    "tasks/cancel", {"taskId": upstream_id}, client_caps=TASKS_CAPS, timeout=CANCEL_TIMEOUT
                )
            except GatewayError as exc:
                log.warning("%s: cancelling task %s failed: %s", upstream.name, upstream_id, exc.message)

    async def _tell(self, task: RelayedTask) -> None:
        """A status change, to the handshake session that created the task (and no other)."""
        if task.session is None:
            return
        message = jsonrpc.notification("notifications/tasks/status", task.handshake())
        try:
            with anyio.move_on_after(1):
                await task.session.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, GatewayError, OSError) as exc:
            log.debug("dropped a task status notification: %s", exc)

    def _drop(self, task: RelayedTask) -> None:
        if self._tasks.get(task.id) is task:
            del self._tasks[task.id]


_DETAIL_KEYS = ("createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs", "statusMessage")

TASKS_CAPS: dict[str, Any] = {"extensions": {TASKS_EXTENSION: {}}}
"""What the gateway declares upstream when it polls or cancels a task itself."""


def _switch_of(governance: Governance, task: RelayedTask) -> KillSwitch | None:
    """The engaged switch that stops `task` now, or the revocation of its key, if any (a
    policy change alone does not stop what runs, as it does not stop a call in flight)."""
    now = time.time()
    for switch in governance.snapshots.current.policy.switches:
        if switch.active(now) and switch.matches(task.principal, task.target):
            return switch
    key_id = task.principal.key_id
    if key_id is not None and key_id not in governance.snapshots.current.keys:
        return revocation(task.principal, now)
    return None
