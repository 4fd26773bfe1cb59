"""The methods that name one tool, prompt or resource (`tools/call`, `prompts/get`,
`resources/read`, `completion/complete`): the gateway name is resolved to its upstream (an
unknown one is refused on record), what can be checked is checked once the decision is
recorded, the request goes out under the upstream's name and what comes back is renamed.
"""

from __future__ import annotations

from typing import Any

from ..errors import ProtocolError
from ..governance import Answered
from ..limits import LimitReached
from ..policy_model import Target
from ..protocol import INVALID_PARAMS, RESOURCE_NOT_FOUND
from .catalog import Catalog, exposed_uri
from .forward import Forwarding, map_block, map_content_uris
from .relay_tasks import declares_tasks
from .session import Call
from .upstream import Upstream


class TargetMethods(Forwarding):
    """Serves the methods that name one target, for the router."""

    catalog: Catalog

    async def _call_tool(self, call: Call) -> dict[str, Any]:
        name = call.params.get("name")
        arguments = call.params.get("arguments")
        entry = self.catalog.tool(name) if isinstance(name, str) else None
        if entry is None:
            await self.governance.refuse_unknown(
                call.principal, "tool", name, "tools/call", arguments if isinstance(arguments, dict) else None
            )
            if not isinstance(name, str):
                raise ProtocolError(INVALID_PARAMS, "tools/call needs a tool name")
            raise ProtocolError(INVALID_PARAMS, f"Unknown tool: {name}")
        target = Target(entry.upstream.name, "tool", entry.original)
        decided = arguments if isinstance(arguments, dict) else None
        params = {**call.params, "name": entry.original}

        reserved = False

        def check() -> None:
            nonlocal reserved
            # Checked only once decided and audited: a probe with bad arguments is on record.
            asks_task = "task" in call.params and not call.modern
            if asks_task and not entry.upstream.modern:
                # Tasks are relayed over the 2026-07-28 extension only (governed end to end).
                # Refused, not stripped: the client asked for something else than a plain call.
                raise Answered(
                    "refused",
                    "task-augmented call",
                    error=ProtocolError(
                        INVALID_PARAMS, f"task-augmented tools/call is not relayed to upstream {entry.upstream.name!r}"
                    ),
                )
            if arguments is not None and not isinstance(arguments, dict):
                raise Answered(
                    "tool_error",
                    "invalid arguments: not an object",
                    error=ProtocolError(INVALID_PARAMS, "tool arguments must be an object"),
                )
            problem = entry.tool.argument_problem(arguments or {})
            if problem is not None:
                # A tool-level error the model can read and correct (spec 2025-11-25).
                text = f"Invalid arguments for {name}: {problem}"
                result = {"content": [{"type": "text", "text": text}], "isError": True}
                raise Answered("tool_error", f"invalid arguments: {problem}", result=result)
            if asks_task or (call.modern and declares_tasks(call.client_capabilities)):
                # The upstream may answer with a task: a place for it is held before it goes.
                try:
                    self.tasks.reserve(call.principal)
                except LimitReached as exc:
                    raise Answered("refused", exc.message, error=exc) from None
                reserved = True

        try:
            result = await self._governed(call, entry.upstream, target, "tools/call", params, decided or {}, check)
        finally:
            if reserved:
                self.tasks.release(call.principal)
        return map_content_uris(entry.upstream, result)

    async def _get_prompt(self, call: Call) -> dict[str, Any]:
        name = call.params.get("name")
        entry = self.catalog.prompt(name) if isinstance(name, str) else None
        if entry is None:
            await self.governance.refuse_unknown(call.principal, "prompt", name, "prompts/get")
            raise ProtocolError(INVALID_PARAMS, f"Unknown prompt: {name}")
        target = Target(entry.upstream.name, "prompt", entry.original)
        params = {**call.params, "name": entry.original}
        result = await self._governed(call, entry.upstream, target, "prompts/get", params)
        messages = result.get("messages")
        if entry.upstream.namespace and isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict) and isinstance(message.get("content"), dict):
                    message["content"] = map_block(entry.upstream, message["content"])
        return result

    def _route_uri(self, params: dict[str, Any]) -> tuple[Upstream, str, str]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise ProtocolError(INVALID_PARAMS, "a resource request needs a uri")
        route = self.catalog.route_uri(uri)
        if route is None:
            raise ProtocolError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
        return route[0], route[1], uri

    async def _read_resource(self, call: Call) -> dict[str, Any]:
        try:
            upstream, original, _ = self._route_uri(call.params)
        except ProtocolError:
            await self.governance.refuse_unknown(call.principal, "resource", call.params.get("uri"), "resources/read")
            raise
        target = Target(upstream.name, "resource", original)
        result = await self._governed(call, upstream, target, "resources/read", {**call.params, "uri": original})
        contents = result.get("contents")
        if upstream.namespace and isinstance(contents, list):
            for item in contents:
                if isinstance(item, dict) and isinstance(item.get("uri"), str):
                    item["uri"] = exposed_uri(upstream, item["uri"])
        return result

    async def _complete(self, call: Call) -> dict[str, Any]:
        ref = call.params.get("ref")
        kind = ref.get("type") if isinstance(ref, dict) else None
        if not isinstance(ref, dict) or kind not in ("ref/prompt", "ref/resource"):
            await self.governance.refuse_unknown(call.principal, "prompt", None, "completion/complete")
            if not isinstance(ref, dict):
                raise ProtocolError(INVALID_PARAMS, "completion/complete needs a ref")
            raise ProtocolError(INVALID_PARAMS, "ref.type must be ref/prompt or ref/resource")
        if kind == "ref/prompt":
            name = ref.get("name")
            entry = self.catalog.prompt(name) if isinstance(name, str) else None
            if entry is None:
                await self.governance.refuse_unknown(call.principal, "prompt", name, "completion/complete")
                raise ProtocolError(INVALID_PARAMS, f"Unknown prompt: {name}")
            upstream, mapped = entry.upstream, {**ref, "name": entry.original}
            target = Target(upstream.name, "prompt", entry.original)
        else:
            uri = ref.get("uri")
            try:
                route = (
                    (self.catalog.route_template(uri) or self.catalog.route_uri(uri)) if isinstance(uri, str) else None
                )
            except ProtocolError:  # no single reading: refused, and on record like any probe
                await self.governance.refuse_unknown(call.principal, "resource", uri, "completion/complete")
                raise
            if route is None:
                await self.governance.refuse_unknown(call.principal, "resource", uri, "completion/complete")
                raise ProtocolError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
            upstream, mapped = route[0], {**ref, "uri": route[1]}
            target = Target(upstream.name, "resource", route[1])
        params = {**call.params, "ref": mapped}
        return await self._governed(call, upstream, target, "completion/complete", params)
