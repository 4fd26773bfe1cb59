"""The task methods a client sends (`tasks/get`, `tasks/update`, `tasks/cancel`, and at
2025-11-25 `tasks/result` and `tasks/list`), served over the registry of relayed tasks
(see relay_tasks): ownership, the decision and audit of each, and the translation to the
2025-11-25 surface for handshake-era clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ..errors import ProtocolError, RpcError
from ..governance import Governance, Ticket
from ..policy_model import Target
from ..protocol import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    RELATED_TASK_META_KEY,
    TASKS_EXTENSION,
)
from . import bridge
from .relay_tasks import TASKS_CAPS, TERMINAL, RelayedTask, TaskRegistry, declares_tasks
from .session import Call
from .upstream import Upstream

Governed = Callable[[Call, Upstream, Target, str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""The router's decide-audit-forward path for a request to an upstream."""
MapResult = Callable[[Upstream, dict[str, Any]], dict[str, Any]]
"""The router's rewrite of a tool result's resource URIs to the gateway's names."""


class TaskMethods:
    """Serves the task methods for the router."""

    def __init__(
        self, registry: TaskRegistry, governance: Governance, governed: Governed, map_result: MapResult
    ) -> None:
        self.registry = registry
        self.governance = governance
        self._governed = governed
        self._map_result = map_result

    async def request(self, call: Call) -> dict[str, Any]:
        """`tasks/get`, `tasks/update`, `tasks/cancel` (and `tasks/result` at 2025-11-25): only
        the principal that created the task reaches it; for anyone else it does not exist.
        Decided and audited against the task's tool, like the call that created it, then
        forwarded under the upstream's id."""
        if call.modern and not declares_tasks(call.client_capabilities):
            raise ProtocolError(
                MISSING_REQUIRED_CLIENT_CAPABILITY,
                f"{call.method} needs the {TASKS_EXTENSION} extension declared in the client capabilities",
                {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
            )
        task_id = call.params.get("taskId")
        task = self.registry.owned(call.principal, task_id)
        if task is None:
            await self.governance.refuse_unknown(call.principal, "tool", task_id, call.method, reason="no such task")
            shown = task_id[:64] if isinstance(task_id, str) else task_id
            raise ProtocolError(INVALID_PARAMS, f"Unknown task: {shown}")
        params = {**call.params, "taskId": task.upstream_id}
        if not call.modern:
            return await self._handshake(call, task, params)
        result = await self._governed(call, task.upstream, task.target, call.method, params)
        if call.method != "tasks/get":
            task.changed.set()  # its watcher looks at once: a cancel or an answer moves it on
            return {k: v for k, v in result.items() if k != "taskId"}
        result = self.registry.observed(task, result)
        if isinstance(result.get("result"), dict):  # the tool's result, inlined once it ended
            result["result"] = self._map_result(task.upstream, result["result"])
        return result

    async def _handshake(self, call: Call, task: RelayedTask, params: dict[str, Any]) -> dict[str, Any]:
        """The 2025-11-25 task methods, over the upstream's 2026-07-28 task."""
        params = {k: v for k, v in params.items() if k != "_meta"}
        if call.method == "tasks/result":
            return await self.governance.call(
                call.principal, task.target, call.method, None, lambda ticket: self._result(call, task)
            )
        if call.method == "tasks/cancel" and task.status in TERMINAL:
            await self.governance.refuse_unknown(
                call.principal, "tool", task.id, call.method, reason="the task has ended"
            )
            raise ProtocolError(INVALID_PARAMS, f"Task {task.id} is already {task.status}")

        async def forward(ticket: Ticket) -> dict[str, Any]:
            result = await task.upstream.call(call.method, params, client_caps=TASKS_CAPS)
            if call.method == "tasks/cancel":
                result = await task.upstream.call("tasks/get", params, client_caps=TASKS_CAPS)
                task.changed.set()
            self.registry.observed(task, result)
            return task.handshake()

        return await self.governance.call(call.principal, task.target, call.method, None, forward)

    async def _result(self, call: Call, task: RelayedTask) -> dict[str, Any]:
        """`tasks/result` (2025-11-25): wait for the end, relaying what the task asks of the
        client meanwhile; the tool's result, or its error."""
        upstream, params = task.upstream, {"taskId": task.upstream_id}
        while True:
            detail = self.registry.observed(task, await upstream.call("tasks/get", params, client_caps=TASKS_CAPS))
            status = detail.get("status")
            if status == "completed" and isinstance(detail.get("result"), dict):
                result = self._map_result(upstream, detail["result"])
                meta = result.get("_meta")
                meta = meta if isinstance(meta, dict) else {}
                return {**result, "_meta": {**meta, RELATED_TASK_META_KEY: {"taskId": task.id}}}
            if status == "failed":
                error = detail.get("error")
                raise RpcError(error if isinstance(error, dict) else {"code": INTERNAL_ERROR, "message": "task failed"})
            if status == "cancelled":
                raise ProtocolError(INVALID_PARAMS, f"Task {task.id} was cancelled")
            if status == "input_required" and call.ask is not None:
                answers = await bridge.fulfil(call, {"inputRequests": detail.get("inputRequests")})
                await upstream.call(
                    "tasks/update", {**params, "inputResponses": answers["inputResponses"]}, client_caps=TASKS_CAPS
                )
                continue
            with anyio.move_on_after(task.poll):
                await task.changed.wait()

    async def list(self, call: Call) -> dict[str, Any]:
        """`tasks/list` (2025-11-25): the caller's own tasks, those whose tool it may still reach."""
        mine = self.registry.listed(call.principal)
        return {"tasks": [t.handshake() for t in mine if self.governance.visible(t.principal, t.target)]}
