"""The registry of relayed tasks, in process, over an upstream that only answers the task
methods: its bound per principal, who may name a task, and what a kill switch does to one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import pytest

from mcp_gateway.audit.redact import ArgumentPolicy
from mcp_gateway.audit.writer import AuditWriter
from mcp_gateway.governance import Governance, Ticket
from mcp_gateway.identity import LOCAL, Principal
from mcp_gateway.limits import LimitReached
from mcp_gateway.policy_model import Decision, KillSwitch, Target
from mcp_gateway.proxy.relay_tasks import TaskRegistry
from mcp_gateway.proxy.upstream import Upstream

from .fakes import ALLOW_LOCAL, WAIT, MemoryAudit, snapshots_of

pytestmark = pytest.mark.anyio

TARGET = Target("files", "tool", "crunch")
OTHER = Principal("local/other", "local")


class TaskUpstream:
    """Holds each task's status; records what the gateway asks of it."""

    name = "files"

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.cancelled: list[str] = []

    async def call(self, method: str, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        task_id = params["taskId"]
        if method == "tasks/cancel":
            self.cancelled.append(task_id)
            self.status[task_id] = "cancelled"
            return {}
        return {"taskId": task_id, "status": self.status[task_id]}

    def created(self, task_id: str) -> dict[str, Any]:
        self.status[task_id] = "working"
        return {"resultType": "task", "taskId": task_id, "status": "working", "pollIntervalMs": 100}


@asynccontextmanager
async def registry(cap: int = 2) -> AsyncIterator[tuple[TaskRegistry, TaskUpstream, Governance, MemoryAudit]]:
    async with anyio.create_task_group() as tg:
        audit = MemoryAudit()
        writer = AuditWriter(audit, "unit", timeout=WAIT)  # type: ignore[arg-type]
        await writer.start(tg)
        governance = Governance(snapshots_of(ALLOW_LOCAL), writer, ArgumentPolicy("digest"))
        with anyio.fail_after(WAIT * 4):
            yield TaskRegistry(governance, tg, cap, ttl=3600), TaskUpstream(), governance, audit
        tg.cancel_scope.cancel()


def ticket(principal: Principal = LOCAL) -> Ticket:
    return Ticket("c1", principal, TARGET, "tools/call", Decision("allow", "ok", "local-all", 1), time.monotonic())


def start(tasks: TaskRegistry, upstream: TaskUpstream, upstream_id: str, principal: Principal = LOCAL) -> str:
    tasks.reserve(principal)
    try:
        return tasks.register(cast(Upstream, upstream), ticket(principal), upstream.created(upstream_id)).id
    finally:
        tasks.release(principal)


async def _ended(tasks: TaskRegistry, task_id: str) -> None:
    task = tasks.owned(LOCAL, task_id)
    assert task is not None
    while task.running:
        await anyio.sleep(0.01)


async def test_running_tasks_fill_the_bound_and_a_finished_one_gives_its_place() -> None:
    async with registry(cap=2) as (tasks, upstream, _, _):
        first = start(tasks, upstream, "up-1")
        start(tasks, upstream, "up-2")
        with pytest.raises(LimitReached, match="max_tasks_per_principal"):
            tasks.reserve(LOCAL)
        start(tasks, upstream, "theirs", OTHER)  # one principal exhausts only itself
        upstream.status["up-1"] = "completed"
        await _ended(tasks, first)
        third = start(tasks, upstream, "up-3")
        assert tasks.owned(LOCAL, first) is None  # the finished record made way
        assert tasks.owned(LOCAL, third) is not None


async def test_a_task_is_named_by_a_gateway_id_that_only_its_creator_can_use() -> None:
    async with registry() as (tasks, upstream, _, _):
        task_id = start(tasks, upstream, "same-id-upstream-side")
        assert task_id != "same-id-upstream-side"
        assert tasks.owned(OTHER, task_id) is None
        assert tasks.owned(LOCAL, "same-id-upstream-side") is None
        task = tasks.owned(LOCAL, task_id)
        assert task is not None and task.upstream_id == "same-id-upstream-side"


async def test_a_kill_switch_cancels_the_task_upstream_and_its_completion_says_killed() -> None:
    async with registry() as (tasks, upstream, governance, audit):
        task_id = start(tasks, upstream, "up-1")
        while len(governance.inflight) == 0:
            await anyio.sleep(0.01)
        switch = KillSwitch("ks1", "tool", "files/crunch", "stop", "ops", time.time())
        assert governance.inflight.kill([switch]) == 1
        await _ended(tasks, task_id)
        while not [r for r in audit.rows if r["kind"] == "completion"]:
            await anyio.sleep(0.01)
    assert upstream.cancelled == ["up-1"]
    assert [(r["outcome"], r["detail"]) for r in audit.rows if r["kind"] == "completion"] == [("killed", "ks1")]
