"""An upstream MCP server that exercises every feature a gateway has to proxy.

It implements what the official MCP conformance suite checks of a server (0.1.16, and
0.2.0-alpha.12 with `--requirements 2025-11-25` and `--requirements 2026-07-28`), so
`mcp-conformance server --url http://127.0.0.1:PORT/mcp` passes against it directly and the
same suite can be pointed at the gateway with this server behind it. The scenario tools of
the newer suite (multi round trip, stateless, JSON Schema 2020-12, custom headers, SSE
polling) live in `examples/everything_scenarios.py`; the tasks extension (`tasks-*`
scenarios, an extension not scored for 2026-07-28) in `examples/tasks_tools.py`. Two places
where SDK 2.3.0 needed help: a tool's input schema is derived from its parameters, so the
JSON Schema 2020-12 tool's listed schema is set on the registered tool (private
`_tool_manager`); and the SDK compares `Mcp-Name` as received, so the HTTP app strips the
whitespace around header values that uvicorn's httptools parser keeps. It also serves as a
real subprocess upstream (stdio or Streamable HTTP) in the gateway's own tests.

    python examples/everything_server.py                      # stdio
    python examples/everything_server.py --transport http --host 127.0.0.1 --port 8001

Conformance surface: tools `test_*`, resources `test://static-text`, `test://static-binary`,
`test://watched-resource` (subscribable), template `test://template/{id}/data`, prompts
`test_*`, `logging/setLevel`, `completion/complete`, `ping`.

Extra tools for the gateway's tests:

- `slow(seconds)`: sleeps, reporting progress when the caller sent a progress token, and
  returns "slept". When cancelled it writes `cancelled slow` to stderr and appends the same
  line to the file named by `EVERYTHING_CANCEL_LOG` (if set), so a test can see that the
  cancellation reached the upstream.
- `echo(text)`: returns `text` as text content and `{"text": text}` as structured content.
- `add(a, b)`: returns `a + b` as structured content `{"result": a + b}`.
- `touch_watched()`: announces a change of `test://watched-resource` to its subscribers:
  `notifications/resources/updated` on the stream of every handshake-era connection that sent
  `resources/subscribe`, and on every 2026-07-28 `subscriptions/listen` stream that names it.
- `list_subscriptions()`: the URIs handshake-era connections are subscribed to, as JSON.
- `toggle_extra_tool()`: adds a tool `extra` (it returns "extra") or removes it if present,
  and sends `notifications/tools/list_changed`: to the calling connection at handshake
  revisions (which is why `tools.listChanged` is advertised there too), and on every
  `subscriptions/listen` stream that asked for tool changes at 2026-07-28.

Sampling and elicitation are declared with `Resolve(...)` so they work at every revision:
mid-call server-to-client requests at 2025-11-25 and earlier, an `InputRequiredResult`
round trip at 2026-07-28.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import warnings
from typing import Annotated, Any

import anyio

# Its sibling modules are found however it is started (`python path/to/it`, runpy, a copy
# made by `mcp-gateway init`).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from everything_scenarios import BoundedEventStore, register
from mcp.server import InitializationOptions, MCPServer, NotificationOptions, ServerRequestContext
from mcp.server.mcpserver import Context, Elicit, ElicitationResult, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import (
    AudioContent,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    LoggingLevel,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field

# A 1x1 red PNG and a one-sample 8 kHz mono WAV: the smallest valid payloads of each kind.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQIAAAAAAA=="
LOG_LEVELS: tuple[LoggingLevel, ...] = (
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"
)  # fmt: skip

WATCHED_URI = "test://watched-resource"

mcp = MCPServer(name="everything-server", version="1.0.0")
# Handshake-era `resources/subscribe` callers per URI, one entry per connection: an update
# goes out on each subscriber's own stream. (At 2026-07-28 the SDK's listen streams do this.)
subscribers: dict[str, dict[object, ServerSession]] = {}
# Process-wide, last `logging/setLevel` wins: enough for a test upstream with one client.
min_log_level: LoggingLevel = "debug"


def _image() -> ImageContent:
    return ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")


async def _log(ctx: Context, level: LoggingLevel, message: str) -> None:
    """Send `notifications/message`, honouring `logging/setLevel` (handshake revisions).

    The SDK marks logging deprecated (gone at 2026-07-28, where it sends only what the request
    opted into); the warning fires when the coroutine is created, so it is silenced around that
    call alone and a test run with warnings-as-errors does not trip over it.
    """
    if LOG_LEVELS.index(level) < LOG_LEVELS.index(min_log_level):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        pending = ctx.session.send_log_message(level, message, related_request_id=ctx.request_id)
    await pending


# --- conformance tools --------------------------------------------------------------------


@mcp.tool(structured_output=False)
def test_simple_text() -> str:
    """Returns a simple text response."""
    return "This is a simple text response for testing."


@mcp.tool()
def test_image_content() -> list[ImageContent]:
    """Returns a PNG image."""
    return [_image()]


@mcp.tool()
def test_audio_content() -> list[AudioContent]:
    """Returns a WAV clip."""
    return [AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")]


@mcp.tool()
def test_embedded_resource() -> list[EmbeddedResource]:
    """Returns an embedded text resource."""
    text = "This is an embedded resource content."
    contents = TextResourceContents(uri="test://embedded-resource", mime_type="text/plain", text=text)
    return [EmbeddedResource(type="resource", resource=contents)]


@mcp.tool()
def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Returns text, an image and an embedded resource."""
    data = json.dumps({"test": "data", "value": 123})
    uri = "test://mixed-content-resource"
    contents = TextResourceContents(uri=uri, mime_type="application/json", text=data)
    return [
        TextContent(type="text", text="Multiple content types test:"),
        _image(),
        EmbeddedResource(type="resource", resource=contents),
    ]


@mcp.tool(structured_output=False)
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three info log notifications while it runs."""
    await _log(ctx, "info", "Tool execution started")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool processing data")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool execution completed")
    return "Tool with logging executed successfully"


@mcp.tool(structured_output=False)
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50 and 100 of 100 (when the caller sent a progress token)."""
    for step in (0, 50, 100):
        if step:
            await anyio.sleep(0.05)
        await ctx.report_progress(step, 100, f"Completed step {step} of 100")
    return "Tool with progress executed successfully"


@mcp.tool(structured_output=False)
def test_error_handling() -> str:
    """Always fails, as a tool error (`isError: true`)."""
    # ToolError is the deliberate kind: its message reaches the client, without a traceback logged.
    raise ToolError("This tool intentionally returns an error for testing")


def _sample(prompt: str) -> Sample:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    return Sample([message], max_tokens=100)


@mcp.tool(structured_output=False)
def test_sampling(prompt: str, reply: Annotated[CreateMessageResult, Resolve(_sample)]) -> str:
    """Asks the client's LLM to answer `prompt` (sampling/createMessage)."""
    text = reply.content.text if isinstance(reply.content, TextContent) else f"<{reply.content.type}>"
    return f"LLM response: {text}"


class UserInfo(BaseModel):
    username: str = Field(description="User's response")
    email: str = Field(description="User's email address")


class Defaults(BaseModel):
    """SEP-1034: a default for every primitive type."""

    name: str = "John Doe"
    age: int = 30
    score: float = 95.5
    status: str = Field("active", json_schema_extra={"enum": ["active", "inactive", "pending"]})
    verified: bool = True


def _titled(key: str, *pairs: tuple[str, str]) -> dict[str, Any]:
    return {key: [{"const": const, "title": title} for const, title in pairs]}


class Enums(BaseModel):
    """SEP-1330: the five enum shapes, built by hand where pydantic has no spelling for them."""

    untitledSingle: str = Field(json_schema_extra={"enum": ["option1", "option2", "option3"]})
    titledSingle: str = Field(
        json_schema_extra=_titled("oneOf", ("value1", "First Option"), ("value2", "Second Option"))
    )
    legacyEnum: str = Field(
        json_schema_extra={
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        }
    )
    untitledMulti: list[str] = Field(
        json_schema_extra={"items": {"type": "string", "enum": ["option1", "option2", "option3"]}}
    )
    titledMulti: list[str] = Field(
        json_schema_extra={"items": _titled("anyOf", ("value1", "First Choice"), ("value2", "Second Choice"))}
    )


def _ask_user(message: str) -> Elicit[UserInfo]:
    return Elicit(message, UserInfo)


def _ask_defaults() -> Elicit[Defaults]:
    return Elicit("Please review your profile", Defaults)


def _ask_enums() -> Elicit[Enums]:
    return Elicit("Please choose among the enum variants", Enums)


def _describe(answer: ElicitationResult[Any]) -> str:
    content = answer.data.model_dump_json() if answer.action == "accept" else "{}"
    return f"action={answer.action}, content={content}"


@mcp.tool(structured_output=False)
def test_elicitation(message: str, answer: Annotated[ElicitationResult[UserInfo], Resolve(_ask_user)]) -> str:
    """Asks the user for a username and an email (elicitation/create)."""
    return f"User response: {_describe(answer)}"


@mcp.tool(structured_output=False)
def test_elicitation_sep1034_defaults(
    answer: Annotated[ElicitationResult[Defaults], Resolve(_ask_defaults)],
) -> str:
    """Elicits with a default value for every primitive type (SEP-1034)."""
    return f"Elicitation completed: {_describe(answer)}"


@mcp.tool(structured_output=False)
def test_elicitation_sep1330_enums(answer: Annotated[ElicitationResult[Enums], Resolve(_ask_enums)]) -> str:
    """Elicits with all five enum schema shapes (SEP-1330)."""
    return f"Elicitation completed: {_describe(answer)}"


# --- gateway test tools --------------------------------------------------------------------


@mcp.tool(structured_output=False)
async def slow(seconds: float, ctx: Context) -> str:
    """Sleeps `seconds`, reporting progress about every 0.1 s; records it if cancelled."""
    steps = max(1, math.ceil(seconds / 0.1))
    try:
        for step in range(1, steps + 1):
            await anyio.sleep(seconds / steps)
            await ctx.report_progress(seconds * step / steps, seconds)
    except anyio.get_cancelled_exc_class():
        print("cancelled slow", file=sys.stderr, flush=True)
        if path := os.environ.get("EVERYTHING_CANCEL_LOG"):
            # Blocking on purpose: a cancelled task cannot await anything (anyio cancels again).
            with open(path, "a", encoding="utf-8") as log:  # noqa: ASYNC230
                log.write("cancelled slow\n")
        raise
    return "slept"


class EchoOutput(BaseModel):
    text: str


@mcp.tool()
def echo(text: str) -> Annotated[CallToolResult, EchoOutput]:
    """Returns `text` unchanged, as text and as structured content."""
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content={"text": text})


@mcp.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@mcp.tool(structured_output=False)
async def touch_watched(ctx: Context) -> str:
    """Tells the subscribers of test://watched-resource that it changed."""
    for key, session in list(subscribers.get(WATCHED_URI, {}).items()):
        try:
            await session.send_resource_updated(WATCHED_URI)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            subscribers[WATCHED_URI].pop(key, None)  # that client has gone
    await ctx.notify_resource_updated(WATCHED_URI)
    return f"touched {WATCHED_URI}"


@mcp.tool(structured_output=False)
def list_subscriptions() -> str:
    """The URIs some handshake-era connection is subscribed to (`resources/subscribe` not yet
    undone), as a JSON list: lets a test see what a client of this server left subscribed."""
    return json.dumps(sorted(uri for uri, sessions in subscribers.items() if sessions))


def extra() -> str:
    """Exists between one `toggle_extra_tool` call and the next."""
    return "extra"


@mcp.tool(
    title="Toggle the extra tool",
    # Annotated so a proxy's listing can be checked for keeping annotations and titles.
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    structured_output=False,
)
async def toggle_extra_tool(ctx: Context) -> str:
    """Adds the tool `extra`, or removes it if present, and announces the tool list change."""
    try:
        mcp.remove_tool("extra")
        outcome = "removed"
    except ToolError:
        mcp.add_tool(extra, name="extra", structured_output=False)
        outcome = "added"
    # Handshake revisions: the caller's standalone stream. At 2026-07-28 the SDK drops this
    # one and the bus reaches the listen streams instead.
    await ctx.session.send_tool_list_changed()
    await ctx.notify_tools_changed()
    return f"extra {outcome}"


register(mcp)  # the scenario tools and prompts of examples/everything_scenarios.py


# --- resources ------------------------------------------------------------------------------


@mcp.resource("test://static-text", name="static-text", mime_type="text/plain")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary", name="static-binary", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (a PNG image)."""
    return base64.b64decode(PNG_BASE64)


@mcp.resource("test://template/{id}/data", name="template-data", mime_type="application/json")
def template_data(id: str) -> str:
    """JSON data for the given id."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@mcp.resource(WATCHED_URI, name="watched-resource", mime_type="text/plain")
def watched_resource() -> str:
    """A resource clients may subscribe to."""
    return "Watched resource content"


# --- prompts --------------------------------------------------------------------------------


@mcp.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A prompt without arguments."""
    return [UserMessage("This is a simple prompt for testing.")]


@mcp.prompt()
def test_prompt_with_arguments(
    arg1: Annotated[str, Field(description="First test argument")],
    arg2: Annotated[str, Field(description="Second test argument")],
) -> list[UserMessage]:
    """A prompt with two required arguments."""
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@mcp.prompt()
def test_prompt_with_embedded_resource(
    resourceUri: Annotated[str, Field(description="URI of the resource to embed")],
) -> list[UserMessage]:
    """A prompt that embeds a resource."""
    text = "Embedded resource content for testing."
    contents = TextResourceContents(uri=resourceUri, mime_type="text/plain", text=text)
    return [
        UserMessage(EmbeddedResource(type="resource", resource=contents)),
        UserMessage("Please process the embedded resource above."),
    ]


@mcp.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt that contains an image."""
    return [UserMessage(_image()), UserMessage("Please analyze the image above.")]


# --- completion, logging level, subscriptions -------------------------------------------------

COMPLETIONS: dict[str, list[str]] = {
    "arg1": ["paris", "park", "party"],
    "arg2": ["hello", "help", "world"],
    "id": ["1", "2", "3", "123"],
    "resourceUri": ["test://static-text", "test://static-binary", "test://watched-resource"],
}


@mcp.completion()  # type: ignore[untyped-decorator, no-untyped-call]  # untyped in SDK 2.3.0
async def complete(
    ref: PromptReference | ResourceTemplateReference,
    argument: CompletionArgument,
    context: CompletionContext | None,
) -> Completion:
    """Prefix-matches a fixed list per argument name (prompt arguments and the template's `id`)."""
    values = [v for v in COMPLETIONS.get(argument.name, []) if v.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


async def set_level(ctx: ServerRequestContext, params: SetLevelRequestParams) -> EmptyResult:
    global min_log_level
    min_log_level = params.level
    return EmptyResult()


def _connection_of(ctx: ServerRequestContext) -> object:
    # A ServerSession is made per request; the connection behind it is what lasts. 2.3.0 has
    # no public accessor for it.
    return ctx.session._connection  # pyright: ignore[reportPrivateUsage]


async def subscribe(ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
    subscribers.setdefault(str(params.uri), {})[_connection_of(ctx)] = ctx.session
    return EmptyResult()


async def unsubscribe(ctx: ServerRequestContext, params: UnsubscribeRequestParams) -> EmptyResult:
    subscribers.get(str(params.uri), {}).pop(_connection_of(ctx), None)
    return EmptyResult()


# MCPServer 2.3.0 has no public hook for these handshake-era methods, and an Extension may not
# bind spec methods; the SDK's own conformance server reaches into the low-level server too.
# Registering them is also what advertises `logging` and `resources.subscribe`.
_lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
_lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
_lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
_lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
_default_init_options = _lowlevel.create_initialization_options


def _init_options(
    notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any
) -> InitializationOptions:
    # Handshake revisions advertise `tools.listChanged` only when told: toggle_extra_tool sends it.
    options = notification_options or NotificationOptions(tools_changed=True, prompts_changed=True)
    return _default_init_options(options, *args, **kwargs)


# Every transport (stdio, Streamable HTTP) asks the low-level server for these options.
_lowlevel.create_initialization_options = _init_options  # type: ignore[method-assign]


from tasks_tools import install as _install_tasks  # noqa: E402 (the tasks extension: its own module)

_install_tasks(mcp)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the everything MCP server (conformance upstream).")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    if args.transport == "stdio":
        mcp.run("stdio")
        return
    import uvicorn

    # `host` enables the SDK's DNS-rebinding protection for loopback addresses.
    # The event store lets a client resume a POST or GET stream with Last-Event-ID (SEP-1699).
    app = mcp.streamable_http_app(host=args.host, event_store=BoundedEventStore(), retry_interval=1000)
    uvicorn.run(_without_header_whitespace(app), host=args.host, port=args.port, log_level="warning")


def _without_header_whitespace(app: Any) -> Any:
    """A field value excludes the whitespace around it (RFC 9110 §5.5), which SEP-2243 header
    validation relies on; httptools, uvicorn's parser when installed, keeps it."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "headers": [(name, value.strip(b" \t")) for name, value in scope["headers"]]}
        await app(scope, receive, send)

    return wrapped


if __name__ == "__main__":
    main()
