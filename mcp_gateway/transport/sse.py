"""Answering one JSON-RPC request over HTTP: as JSON when nothing else needs saying, as an
SSE stream when the call has notifications or requests for the client first.

The choice is deferred until the handler either finishes (JSON, with a status code mapped
from the error) or emits its first message (SSE). A long silent handler commits to SSE
after `KEEPALIVE` seconds so idle-timeout proxies keep the connection open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from starlette.types import Receive, Send

from .. import jsonrpc
from ..errors import INTERNAL_ERROR, GatewayError, ProtocolError
from ..jsonrpc import Message, RequestId

log = logging.getLogger(__name__)

KEEPALIVE = 15.0
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def frame(message: Message) -> bytes:
    return b"event: message\ndata: " + jsonrpc.dumps(message) + b"\n\n"


async def send_json(
    send: Send,
    status: int,
    body: Message | None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = jsonrpc.dumps(body) if body is not None else b""
    all_headers = (JSON_HEADERS if body is not None else []) + (headers or [])
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": payload})


async def send_status(send: Send, status: int, text: str = "", headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    base = [(b"content-type", b"text/plain; charset=utf-8")] if body else []
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})


Handler = Callable[[Callable[[Message], Awaitable[None]]], Awaitable[dict[str, Any]]]


async def answer(
    receive: Receive,
    send: Send,
    request_id: RequestId,
    handler: Handler,
    *,
    status_for: Mapping[int, int],
    streaming: bool,
    prefer_sse: bool = False,
    headers: list[tuple[bytes, bytes]] | None = None,
    scope: anyio.CancelScope | None = None,
) -> None:
    """Run `handler(emit)` and write its answer. `emit` streams a message to the client.

    With `streaming` false (the client accepts no SSE) emitted messages are dropped. With
    `prefer_sse` even an answer with nothing before it is sent as a one-event stream.
    The client disconnecting cancels the handler; so does cancelling `scope`, in which
    case no answer is written (the client asked for the cancellation).
    """
    outgoing_send, outgoing = anyio.create_memory_object_stream[bytes](64)
    final: list[Message] = []
    cancelled_by_peer = False
    call_scope = scope or anyio.CancelScope()

    async def emit(message: Message) -> None:
        if streaming:
            await outgoing_send.send(frame(message))

    async def run() -> None:
        async with outgoing_send:
            with call_scope:
                try:
                    final.append(jsonrpc.result(request_id, await handler(emit)))
                except GatewayError as exc:
                    final.append(jsonrpc.error(request_id, exc))
                except Exception:  # the top of a request: answer, log, keep serving
                    log.exception("request %r failed", request_id)
                    final.append(jsonrpc.error(request_id, ProtocolError(INTERNAL_ERROR, "Internal error")))

    async def watch_disconnect() -> None:
        nonlocal cancelled_by_peer
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                cancelled_by_peer = True
                call_scope.cancel()
                return

    async with outgoing, anyio.create_task_group() as tg:
        tg.start_soon(run)
        tg.start_soon(watch_disconnect)
        first: bytes | None = None
        done = False
        with anyio.move_on_after(KEEPALIVE if streaming else float("inf")):
            try:
                first = await outgoing.receive()
            except anyio.EndOfStream:
                done = True
        if done:
            tg.cancel_scope.cancel()
            if final and prefer_sse and streaming:
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + (headers or [])})
                await send({"type": "http.response.body", "body": frame(final[0])})
            elif final:
                message = final[0]
                status = status_for.get(message["error"]["code"], 200) if "error" in message else 200
                await send_json(send, status, message, headers)
            elif not cancelled_by_peer:
                await send_status(send, 204, headers=headers)  # cancelled by notifications/cancelled
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + (headers or [])})
        chunk = first if first is not None else b": keepalive\n\n"
        while True:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            chunk = b": keepalive\n\n"
            with anyio.move_on_after(KEEPALIVE):
                try:
                    chunk = await outgoing.receive()
                except anyio.EndOfStream:
                    break
        tail = frame(final[0]) if final else b""
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        tg.cancel_scope.cancel()
