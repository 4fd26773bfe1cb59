"""The conformance scenarios of the everything server that go beyond plain tools and prompts.

Registered on the server by `examples/everything_server.py` (`register(mcp)`); kept apart so
that file stays a readable tour of the basic surface. What lives here, by scenario of the
official suite (`@modelcontextprotocol/conformance` 0.2.0-alpha.12):

- `input-required-result-*` (2026-07-28, multi round trip): tools that answer with an
  `InputRequiredResult` spelled out by hand, because the suite names the input keys
  (`user_name`, `capital_question`, ...) and the SDK's `Resolve(...)` names them after the
  parameter. The SDK seals `requestState` on the way out and unseals it on the way back
  (`RequestStateBoundary`), so a tampered state never reaches a tool: that is the
  `tampered-state` scenario. The prompt `test_input_required_result_prompt` asks the same way.
- `server-stateless` (2026-07-28): `test_missing_capability` (needs sampling: the SDK answers
  -32021 with `requiredCapabilities` when the client did not declare it),
  `test_logging_tool`, `test_streaming_elicitation`, and the list-change hooks
  `test_trigger_tool_change` / `test_trigger_prompt_change`.
- `json-schema-2020-12`: `json_schema_2020_12_tool`, whose input schema is the suite's
  2020-12 document verbatim (`$schema`, `$defs` with `$anchor`, `allOf`/`anyOf`,
  `if`/`then`/`else`, `additionalProperties: false`).
- `http-custom-header-server-validation` (SEP-2243): `test_custom_headers`, whose `region`
  argument is mirrored into the `Mcp-Param-Region` header (`x-mcp-header`); the SDK checks it.
- `server-sse-polling` (2025-11-25, SEP-1699): `test_reconnection` closes its POST stream
  mid-call; the result reaches the client when it comes back with `Last-Event-ID`
  (`BoundedEventStore` below keeps what it missed).
"""

from __future__ import annotations

import itertools
import warnings
from collections import OrderedDict
from typing import Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context, Resolve, Sample
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolResult,
    CreateMessageResult,
    ElicitResult,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsResult,
    SamplingMessage,
    TextContent,
)
from pydantic import Field

JSON_SCHEMA_2020_12_TOOL = "json_schema_2020_12_tool"
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _elicit(message: str, field: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def _sampling(prompt: str, max_tokens: int) -> dict[str, Any]:
    message = {"role": "user", "content": {"type": "text", "text": prompt}}
    return {"method": "sampling/createMessage", "params": {"messages": [message], "maxTokens": max_tokens}}


ROOTS_REQUEST: dict[str, Any] = {"method": "roots/list", "params": {}}


def ask(requests: dict[str, dict[str, Any]], state: str | None = None) -> InputRequiredResult:
    """An `InputRequiredResult` asking the client for `requests` (wire shapes, keyed by name)."""
    wire: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
    if state is not None:
        wire["requestState"] = state
    return InputRequiredResult.model_validate(wire)


def answer(ctx: Context, key: str) -> Any:
    """The client's answer to input request `key`, or None when it has not answered it yet.

    Answers to keys this tool never asked for are ignored (the SDK has already checked that
    every answer has the shape of an input response).
    """
    return (ctx.input_responses or {}).get(key)


def text(value: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=value)])


def _elicited(response: Any, field: str) -> str:
    if not isinstance(response, ElicitResult) or response.action != "accept" or not response.content:
        raise MCPError(code=INVALID_PARAMS, message="expected an accepted elicitation answer")
    return str(response.content.get(field, ""))


def _sampled(response: Any) -> str:
    if not isinstance(response, CreateMessageResult):
        raise MCPError(code=INVALID_PARAMS, message="expected a sampling answer")
    return response.content.text if isinstance(response.content, TextContent) else f"<{response.content.type}>"


def _roots(response: Any) -> str:
    if not isinstance(response, ListRootsResult):
        raise MCPError(code=INVALID_PARAMS, message="expected a roots/list answer")
    return ", ".join(str(root.uri) for root in response.roots)


def _fixed_sample() -> Sample:
    message = SamplingMessage(role="user", content=TextContent(type="text", text="Say hello"))
    return Sample([message], max_tokens=10)


class BoundedEventStore(EventStore):
    """Streamable HTTP resumability for the example: the last `capacity` events of all
    streams, in memory. A client that comes back with `Last-Event-ID` gets the events of
    that stream stored after it; an id that has been evicted (or never existed) replays
    nothing."""

    def __init__(self, capacity: int = 1000) -> None:
        self._capacity = capacity
        self._events: OrderedDict[EventId, tuple[StreamId, JSONRPCMessage | None]] = OrderedDict()
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self._capacity:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        if last_event_id not in self._events:
            return None
        stream_id, _ = self._events[last_event_id]
        after = False
        for event_id, (stream, message) in list(self._events.items()):
            if after and stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream_id


def register(mcp: MCPServer) -> None:
    """Add the scenario tools and prompts to `mcp`."""

    # --- input-required-result-* (SEP-2322) ------------------------------------------------

    @mcp.tool(structured_output=False)
    def test_input_required_result_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks the user's name (one elicitation, no state), then greets them."""
        response = answer(ctx, "user_name")
        if response is None:
            return ask({"user_name": _elicit("What is your name?", "name")})
        return text(f"Hello, {_elicited(response, 'name')}!")

    @mcp.tool(structured_output=False)
    def test_input_required_result_sampling(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks the client's LLM for the capital of France, then repeats its answer."""
        response = answer(ctx, "capital_question")
        if response is None:
            return ask({"capital_question": _sampling("What is the capital of France?", 100)})
        return text(f"LLM said: {_sampled(response)}")

    @mcp.tool(structured_output=False)
    def test_input_required_result_list_roots(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks the client for its roots, then names them."""
        response = answer(ctx, "client_roots")
        if response is None:
            return ask({"client_roots": ROOTS_REQUEST})
        return text(f"Roots: {_roots(response)}")

    @mcp.tool(structured_output=False)
    def test_input_required_result_request_state(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks for a confirmation with request state; answers `state-ok` once the state is back."""
        response = answer(ctx, "confirm")
        if response is None or ctx.request_state != "confirm-pending":
            return ask({"confirm": _elicit("Please confirm", "ok", "boolean")}, "confirm-pending")
        return text(f"state-ok: confirmed={_elicited(response, 'ok')}")

    @mcp.tool(structured_output=False)
    def test_input_required_result_multiple_inputs(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks for a name, a sampled greeting and the roots at once, with request state."""
        name, greeting, roots = (answer(ctx, key) for key in ("user_name", "greeting", "client_roots"))
        if name is None or greeting is None or roots is None or ctx.request_state != "all-three":
            requests = {
                "user_name": _elicit("What is your name?", "name"),
                "greeting": _sampling("Generate a greeting", 50),
                "client_roots": ROOTS_REQUEST,
            }
            return ask(requests, "all-three")
        return text(f"{_sampled(greeting)} {_elicited(name, 'name')} (roots: {_roots(roots)})")

    @mcp.tool(structured_output=False)
    def test_input_required_result_multi_round(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Three rounds: a name, then a favourite colour (new state), then the result."""
        if ctx.request_state == "round-2" and (color := answer(ctx, "step2")) is not None:
            return text(f"Favourite colour: {_elicited(color, 'color')}")
        if ctx.request_state == "round-1" and (name := answer(ctx, "step1")) is not None:
            _elicited(name, "name")
            return ask({"step2": _elicit("Step 2: What is your favorite color?", "color")}, "round-2")
        return ask({"step1": _elicit("Step 1: What is your name?", "name")}, "round-1")

    @mcp.tool(structured_output=False)
    def test_input_required_result_tampered_state(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks for a confirmation with request state. The SDK seals the state, so a tampered
        one is refused before this function runs."""
        response = answer(ctx, "confirm")
        if response is None or ctx.request_state != "untampered":
            return ask({"confirm": _elicit("Please confirm", "ok", "boolean")}, "untampered")
        return text("state intact")

    @mcp.tool(structured_output=False)
    def test_input_required_result_capabilities(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks only for what the client declared it can answer (sampling, elicitation, roots)."""
        declared = ctx.client_capabilities
        requests: dict[str, dict[str, Any]] = {}
        if declared is not None and declared.sampling is not None:
            requests["sample"] = _sampling("Say hello", 10)
        if declared is not None and declared.elicitation is not None:
            requests["confirm"] = _elicit("Please confirm", "ok", "boolean")
        if declared is not None and declared.roots is not None:
            requests["client_roots"] = ROOTS_REQUEST
        if not requests or all(answer(ctx, key) is not None for key in requests):
            return text(f"answered: {sorted(requests)}")
        return ask(requests)

    @mcp.prompt()
    def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
        """A prompt that first asks the user what context to use."""
        response = answer(ctx, "user_context")
        if response is None:
            return ask({"user_context": _elicit("What context should the prompt use?", "context")})
        return [UserMessage(f"Use this context: {_elicited(response, 'context')}")]

    # --- server-stateless (SEP-2575) ------------------------------------------------------

    @mcp.tool(structured_output=False)
    def test_missing_capability(reply: Annotated[CreateMessageResult, Resolve(_fixed_sample)]) -> str:
        """Needs sampling: a client that did not declare it gets -32021."""
        return f"LLM said: {_sampled(reply)}"

    @mcp.tool(structured_output=False)
    async def test_logging_tool(ctx: Context) -> str:
        """Logs one info message, which only reaches a client that asked for a log level."""
        with warnings.catch_warnings():  # logging is deprecated at 2026-07-28, still served
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            pending = ctx.log("info", "test_logging_tool ran")
        await pending
        return "logged"

    @mcp.tool(structured_output=False)
    async def test_streaming_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Reports progress, then asks for a confirmation: the stream carries notifications
        and the final result, never a request of its own."""
        response = answer(ctx, "confirm")
        if response is None:
            await ctx.report_progress(1, 2, "asking")
            return ask({"confirm": _elicit("Please confirm", "ok", "boolean")})
        return text(f"confirmed={_elicited(response, 'ok')}")

    def changed() -> str:
        """Exists between one `test_trigger_tool_change` call and the next."""
        return "changed"

    def changed_prompt() -> str:
        """Exists between one `test_trigger_prompt_change` call and the next."""
        return "changed"

    @mcp.tool(structured_output=False)
    async def test_trigger_tool_change(ctx: Context) -> str:
        """Adds or removes the tool `test_changed_tool` and announces the change."""
        try:
            mcp.remove_tool("test_changed_tool")
        except Exception:
            mcp.add_tool(changed, name="test_changed_tool", structured_output=False)
        await ctx.notify_tools_changed()
        return "tools changed"

    @mcp.tool(structured_output=False)
    async def test_trigger_prompt_change(ctx: Context) -> str:
        """Adds or removes the prompt `test_changed_prompt` and announces the change."""
        try:
            mcp.remove_prompt("test_changed_prompt")
        except Exception:
            mcp.prompt(name="test_changed_prompt")(changed_prompt)
        await ctx.notify_prompts_changed()
        return "prompts changed"

    # --- json-schema-2020-12, custom headers, SSE polling -----------------------------------

    @mcp.tool(name=JSON_SCHEMA_2020_12_TOOL, description="Tool with JSON Schema 2020-12 features")
    def json_schema_2020_12_tool(
        name: str | None = None,
        address: dict[str, Any] | None = None,
        contactMethod: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> str:
        return f"contact {name or 'someone'} by {contactMethod or ('phone' if phone else 'email')}"

    @mcp.tool(structured_output=False)
    def test_custom_headers(
        region: Annotated[
            str, Field(description="Mirrored into Mcp-Param-Region", json_schema_extra={"x-mcp-header": "Region"})
        ],
        query: str = "",
    ) -> str:
        """Echoes `region`, which a 2026-07-28 client also sends as the `Mcp-Param-Region` header."""
        return f"region={region} query={query}"

    @mcp.tool(structured_output=False)
    async def test_reconnection(ctx: Context) -> str:
        """Closes its POST stream mid-call (HTTP with an event store), then finishes: the client
        gets the result by coming back with `Last-Event-ID`."""
        await ctx.close_sse_stream()
        await anyio.sleep(0.2)
        return "Reconnection test completed"

    # The SDK derives a tool's input schema from the function's parameters; pydantic has no
    # spelling for a root-level if/then/else, so the listed schema is set to the suite's document.
    mcp._tool_manager.get_tool(JSON_SCHEMA_2020_12_TOOL).parameters = JSON_SCHEMA_2020_12  # pyright: ignore[reportPrivateUsage, reportOptionalMemberAccess]
