"""The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) for the everything server.

Kept apart from `everything_server.py` so the scenario tools of the core revisions and the
tasks extension evolve separately; the server installs it with `install(mcp)`.

The server decides which calls become tasks: a call of a task-supporting tool from a client
that declared the extension (in its capabilities or the request's `_meta`) answers at once
with a `CreateTaskResult` (`resultType: "task"`) and runs on; `tasks/get` reports it (the
result or error inlined once it ends, pending `inputRequests` while it waits on the client),
`tasks/update` delivers input, `tasks/cancel` stops it. `tasks/result` and `tasks/list` are
gone in this revision of the extension (method not found).

Tools:
- `greet(name)`: sync only.
- `slow_compute(seconds, label, link)`: task-supporting; sleeps, then answers (with a
  resource link to `link`, if given). When cancelled it
  writes `cancelled slow_compute` to stderr and to `EVERYTHING_CANCEL_LOG` (if set), like `slow`.
  (Every task started appends `started <tool>` to `EVERYTHING_TASK_LOG`, if set.)
- `failing_job`: task required; a tool error after a moment (`completed`, `isError`).
- `protocol_error_job`: task-supporting; fails with a protocol error (`failed`).
- `confirm_delete(filename)`, `multi_input`: tasks that wait on one, then two, elicitations.
- `test_tool_with_task`: task required; asks for `user_name` by multi round trip, then
  becomes a task whose result names the user.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams, RequestParams

TASKS = "io.modelcontextprotocol/tasks"
CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
MISSING_CAPABILITY = -32021
INVALID_PARAMS = -32602
HEADER_MISMATCH = -32020
TTL_MS = 300_000
POLL_MS = 200
MAX_TASKS = 1000

Body = Callable[["_Task", dict[str, Any]], Awaitable[dict[str, Any]]]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(text: str, *, error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if error:
        result["isError"] = True
    return result


@dataclass(eq=False)
class _Task:
    id: str
    tool: str
    status: str = "working"
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    ended_at: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    runner: asyncio.Task[None] | None = None

    def touch(self, status: str) -> None:
        self.status, self.updated = status, _now()
        if status in ("completed", "failed", "cancelled"):
            self.ended_at = time.monotonic()

    async def ask(self, key: str, request: dict[str, Any]) -> dict[str, Any]:
        """Wait for the client's answer to `request` (delivered by `tasks/update`)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[key], self.answers[key] = request, future
        self.touch("input_required")
        try:
            return await future
        finally:
            self.pending.pop(key, None)
            self.answers.pop(key, None)
            if not self.pending and self.status == "input_required":
                self.touch("working")

    def detailed(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "taskId": self.id,
            "status": self.status,
            "createdAt": self.created,
            "lastUpdatedAt": self.updated,
            "ttlMs": TTL_MS,
            "pollIntervalMs": POLL_MS,
        }
        if self.status == "completed" and self.result is not None:
            out["result"] = self.result
        if self.status == "failed" and self.error is not None:
            out["error"] = self.error
        if self.status == "input_required":
            out["inputRequests"] = dict(self.pending)
        return out


_tasks: dict[str, _Task] = {}


def _prune() -> None:
    now = time.monotonic()
    for task_id, task in list(_tasks.items()):
        if task.ended_at is not None and now - task.ended_at > TTL_MS / 1000:
            del _tasks[task_id]


def _elicit(message: str, properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties}
    return {"method": "elicitation/create", "params": {"mode": "form", "message": message, "requestedSchema": schema}}


# -- the tools' bodies, as tasks ------------------------------------------------------------


async def _slow_compute(task: _Task, args: dict[str, Any]) -> dict[str, Any]:
    seconds = float(args.get("seconds", 1))
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        print("cancelled slow_compute", file=sys.stderr, flush=True)
        if path := os.environ.get("EVERYTHING_CANCEL_LOG"):
            with open(path, "a", encoding="utf-8") as log:  # noqa: ASYNC230 (a cancelled task writes at once)
                log.write("cancelled slow_compute\n")
        raise
    result = _text(f"computed {args.get('label', '')} after {seconds:g}s")
    if link := args.get("link"):
        result["content"].append({"type": "resource_link", "uri": link, "name": "output"})
    return result


async def _failing_job(task: _Task, args: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.5)
    return _text("the job failed", error=True)


async def _protocol_error_job(task: _Task, args: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.2)
    raise RuntimeError("the job crashed")


async def _confirm_delete(task: _Task, args: dict[str, Any]) -> dict[str, Any]:
    answer = await task.ask("confirm", _elicit(f"Delete {args.get('filename')}?", {"confirm": {"type": "boolean"}}))
    confirmed = answer.get("action") == "accept" and (answer.get("content") or {}).get("confirm") is True
    return _text(f"deleted {args.get('filename')}" if confirmed else "kept the file")


async def _multi_input(task: _Task, args: dict[str, Any]) -> dict[str, Any]:
    first, second = await asyncio.gather(
        task.ask("first", _elicit("First?", {"name": {"type": "string"}})),
        task.ask("second", _elicit("Second?", {"name": {"type": "string"}})),
    )
    names = [(a.get("content") or {}).get("name") for a in (first, second)]
    return _text(f"got {names[0]} and {names[1]}")


def _greeting_for(user: str) -> Body:
    async def body(task: _Task, args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return _text(f"Hello, {user}! (from a task)")

    return body


@dataclass(frozen=True)
class _Spec:
    body: Body
    required: bool = False


_TOOLS: dict[str, _Spec] = {
    "slow_compute": _Spec(_slow_compute),
    "failing_job": _Spec(_failing_job, required=True),
    "protocol_error_job": _Spec(_protocol_error_job),
    "confirm_delete": _Spec(_confirm_delete),
    "multi_input": _Spec(_multi_input),
    "test_tool_with_task": _Spec(_greeting_for(""), required=True),
}


async def _run(task: _Task, body: Body, args: dict[str, Any]) -> None:
    try:
        task.result = await body(task, args)
        task.touch("completed")
    except asyncio.CancelledError:
        task.touch("cancelled")
    except Exception as exc:  # the top of a task: a protocol-level failure, on the task
        task.error = {"code": -32603, "message": f"{type(exc).__name__}: {exc}"}
        task.touch("failed")


def _start(tool: str, body: Body, args: dict[str, Any]) -> dict[str, Any]:
    _prune()
    if sum(1 for t in _tasks.values() if t.ended_at is None) >= MAX_TASKS:
        raise MCPError(code=INVALID_PARAMS, message=f"too many tasks (at most {MAX_TASKS})")
    task = _Task(secrets.token_urlsafe(12), tool)
    if path := os.environ.get("EVERYTHING_TASK_LOG"):
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"started {tool}\n")
    _tasks[task.id] = task  # durable before the answer: a tasks/get right after it resolves
    task.runner = asyncio.get_running_loop().create_task(_run(task, body, args))
    created = task.detailed()
    return {
        "resultType": "task",
        **{k: created[k] for k in ("taskId", "status", "createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs")},
    }


# -- the extension --------------------------------------------------------------------------


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    caps = ctx.session.client_capabilities
    extensions = caps.extensions if caps is not None else None
    if extensions and TASKS in extensions:
        return True
    meta = ctx.meta
    wire = meta.get(CLIENT_CAPABILITIES) if isinstance(meta, dict) else getattr(meta, CLIENT_CAPABILITIES, None)
    if hasattr(meta, "model_extra") and wire is None:
        wire = (meta.model_extra or {}).get(CLIENT_CAPABILITIES)
    ext = wire.get("extensions") if isinstance(wire, dict) else None
    return isinstance(ext, dict) and TASKS in ext


def _missing() -> MCPError:
    return MCPError(
        code=MISSING_CAPABILITY,
        message=f"Client did not declare required extension {TASKS!r}",
        data={"requiredCapabilities": {"extensions": {TASKS: {}}}},
    )


class TaskParams(RequestParams):
    taskId: str


class UpdateParams(TaskParams):
    inputResponses: dict[str, Any] | None = None


def _task(ctx: ServerRequestContext[Any, Any], params: TaskParams) -> _Task:
    if not _declared(ctx):
        raise _missing()
    request = ctx.request
    headers = getattr(request, "headers", None)
    if headers is not None and "mcp-name" in headers and headers["mcp-name"].strip() != params.taskId:
        # SEP-2663 extends SEP-2243's Mcp-Name to the tasks methods: it names the task.
        raise MCPError(code=HEADER_MISMATCH, message="Mcp-Name header does not match params.taskId")
    _prune()
    task = _tasks.get(params.taskId)
    if task is None:
        raise MCPError(code=INVALID_PARAMS, message=f"Unknown task: {params.taskId}")
    return task


async def _get(ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
    return _task(ctx, params).detailed()


async def _update(ctx: ServerRequestContext[Any, Any], params: UpdateParams) -> dict[str, Any]:
    task = _task(ctx, params)
    for key, answer in (params.inputResponses or {}).items():
        future = task.answers.get(key)
        if future is not None and not future.done() and isinstance(answer, dict):
            task.pending.pop(key, None)
            future.set_result(answer)
    return {}


async def _cancel(ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
    task = _task(ctx, params)
    if task.runner is not None and not task.runner.done():
        task.runner.cancel()
        await asyncio.wait([task.runner])
    return {}


class TasksExtension(Extension):
    identifier = TASKS

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskParams, _get),
            MethodBinding("tasks/update", UpdateParams, _update),
            MethodBinding("tasks/cancel", TaskParams, _cancel),
        ]

    async def intercept_tool_call(self, params: CallToolRequestParams, ctx: Any, call_next: Any) -> Any:
        spec = _TOOLS.get(params.name)
        if spec is None:
            return await call_next(ctx)
        if not _declared(ctx):
            if spec.required:
                raise _missing()
            return await call_next(ctx)  # a client without the extension gets a plain call
        args = params.arguments or {}
        body = spec.body
        if params.name == "test_tool_with_task":
            answers = params.input_responses or {}
            answer = answers.get("user_name")
            if hasattr(answer, "model_dump"):
                answer = answer.model_dump(by_alias=True, exclude_none=True)
            if not isinstance(answer, dict):
                return {
                    "resultType": "input_required",
                    "inputRequests": {"user_name": _elicit("Your name?", {"name": {"type": "string"}})},
                }
            body = _greeting_for(str((answer.get("content") or {}).get("name", "")))
        return _start(params.name, body, args)


# -- the tools as listed (and as run for a client without the extension) -------------------


def greet(name: str) -> str:
    """Say hello (sync only)."""
    return f"Hello, {name}!"


async def slow_compute(seconds: float = 1, label: str = "", link: str = "") -> str:
    """Sleep `seconds`, then answer (runs as a task for clients with the tasks extension); as
    a task, its result links to the resource `link` when given."""
    result = await _slow_compute(_Task("", "slow_compute"), {"seconds": seconds, "label": label})
    return str(result["content"][0]["text"])


def failing_job() -> str:
    """A job that fails (task required)."""
    raise MCPError(code=MISSING_CAPABILITY, message="failing_job runs only as a task")


def protocol_error_job() -> str:
    """A job that crashes with a protocol error."""
    raise MCPError(code=-32603, message="the job crashed")


def confirm_delete(filename: str) -> str:
    """Delete a file after asking (as a task: waits on the client's answer)."""
    return f"would delete {filename}: run it as a task to be asked"


def multi_input() -> str:
    """Ask two questions at once (as a task)."""
    return "run it as a task to be asked"


def test_tool_with_task() -> str:
    """Ask the user's name, then greet them from a task (task required)."""
    raise MCPError(code=MISSING_CAPABILITY, message="test_tool_with_task runs only as a task")


def install(mcp: MCPServer) -> None:
    """Add the tasks extension and its tools to `mcp` (MCPServer 2.3.0 takes extensions only
    at construction: this applies one through the same private steps)."""
    for fn in (greet, slow_compute, failing_job, protocol_error_job, confirm_delete, multi_input, test_tool_with_task):
        mcp.add_tool(fn)
    mcp._apply_extension(TasksExtension())
    mcp._install_extension_interceptor()
