"""Answering one JSON-RPC request over HTTP: as JSON when nothing else needs saying, as an
SSE stream when the call has notifications or requests for the client first.

The choice is deferred until the handler either finishes (JSON, with a status code mapped
from the error) or emits its first message (SSE). A long silent handler commits to SSE
after `KEEPALIVE` seconds so idle-timeout proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.types import Receive, Send

from .. import jsonrpc
from ..errors import GatewayError, ProtocolError
from ..jsonrpc import Message, RequestId
from ..protocol import INTERNAL_ERROR
from ..proxy import payload
from .replay import Replay

log = logging.getLogger(__name__)

KEEPALIVE = 15.0
WATCH_AFTER = 0.05
"""Seconds a request runs before the gateway starts watching for the client to hang up:
most calls end sooner, and never pay for the watcher."""
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


WRITE_CHUNK = 256 * 1024
"""A large answer is written in pieces this size, each once the client has taken the one
before (uvicorn's `send` waits for the socket to drain), so a client that reads slowly
holds the answer in the gateway once, not again in the socket's buffer."""


def _pieces(message: Message) -> list[bytes | memoryview]:
    result = message.get("result")
    if isinstance(result, payload.RawResult):
        return payload.response_pieces(message.get("id"), result)
    return [jsonrpc.dumps(message)]


async def _write(send: Send, pieces: list[bytes | memoryview], *, end: bool) -> bool:
    """Write `pieces` as body parts, a slice at a time; False when the client stopped
    reading for longer than `payload.WRITE_TIMEOUT` (the response is left unfinished: the
    server closes the connection)."""
    try:
        while pieces:
            view = memoryview(pieces.pop(0))
            for start in range(0, len(view), WRITE_CHUNK):
                part = bytes(view[start : start + WRITE_CHUNK])
                async with asyncio.timeout(payload.WRITE_TIMEOUT):
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                    # The server's writes go out at the end of a loop turn: let them, so the
                    # socket can push back before the next slice (and other work can run).
                    await asyncio.sleep(0)
            view.release()
        if end:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except TimeoutError:
        log.warning("a client took none of its answer for %gs: its connection is dropped", payload.WRITE_TIMEOUT)
        return False
    return True


_FRAME = b"event: message\ndata: "


def frame(message: Message) -> bytes:
    return _FRAME + jsonrpc.dumps(message) + b"\n\n"


async def send_json(
    send: Send,
    status: int,
    body: Message | bytes | None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """`body` is a message, or one already encoded."""
    encoded = body if isinstance(body, bytes) else jsonrpc.dumps(body) if body is not None else b""
    length = (b"content-length", str(len(encoded)).encode())
    all_headers = [*JSON_HEADERS, length] if body is not None else [length]
    if headers:
        all_headers += headers
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": encoded})


async def send_status(
    send: Send, status: int, text: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode()
    base = [(b"content-type", b"text/plain; charset=utf-8")] if body else []
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})


StreamedHandler = Callable[[Callable[[Message], Awaitable[None]]], Awaitable[dict[str, Any]]]


async def relay(
    receive: Receive,
    send: Send,
    outgoing: MemoryObjectReceiveStream[Message],
    on_sent: Callable[[], None] | None = None,
    frame_of: Callable[[Message], bytes] = frame,
) -> None:
    """Write each message from `outgoing` as an event (framed by `frame_of`) on an open SSE
    response, with keepalive comments when idle, until the stream ends or the client hangs up."""

    gone = False

    async def watch_disconnect(tg: TaskGroup) -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_disconnect, tg)
            while True:
                chunk = b": keepalive\n\n"
                with anyio.move_on_after(KEEPALIVE):
                    try:
                        chunk = frame_of(await outgoing.receive())
                    except anyio.EndOfStream:
                        break
                if on_sent is not None:
                    on_sent()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            tg.cancel_scope.cancel()
        if not gone:  # the stream ended on our side (the session was closed): end the response too
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass  # the client is gone


class Cancellation:
    """Lets `notifications/cancelled` stop a request in flight (registered per request id)."""

    __slots__ = ("requested", "task")

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.requested = False

    def cancel(self) -> None:
        if not self.requested and self.task is not None:
            self.requested = True
            self.task.cancel()


class _Stream:
    """The response being written: JSON until something has to stream, then SSE.

    With a `replay`, events get ids and are kept for `Last-Event-ID` (the stream opens with
    a priming event), and the stream may be `detached`: the client left or the gateway let
    it go, and events are kept without being written."""

    __slots__ = ("committed", "detached", "headers", "key", "lock", "replay", "send", "streaming")

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]], streaming: bool, replay: Replay | None) -> None:
        self.send = send
        self.headers = headers
        self.streaming = streaming
        self.committed = False
        self.detached = False
        self.lock = asyncio.Lock()
        self.replay = replay
        self.key = replay.open_stream() if replay is not None else ""

    async def _commit(self) -> bytes:
        """Start the SSE response (under the lock); returns what the body opens with (the
        priming event of a resumable stream), to go out with the first chunk."""
        self.committed = True
        if not self.detached:
            await self.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.headers})
        return self.replay.record(self.key, None) if self.replay is not None else b""

    async def _write(self, chunk: bytes | Message) -> None:
        async with self.lock:
            opening = b"" if self.committed else await self._commit()
            if isinstance(chunk, dict):
                chunk = self.replay.record(self.key, chunk) if self.replay is not None else frame(chunk)
            if not self.detached:
                await self.send({"type": "http.response.body", "body": opening + chunk, "more_body": True})

    async def emit(self, message: Message) -> None:
        if self.streaming:
            await self._write(message)

    async def keepalive(self) -> None:
        if self.streaming:
            await self._write(b": keepalive\n\n")

    async def let_go(self) -> None:
        """End the response while the call goes on (SSE polling): the client resumes with
        Last-Event-ID and gets the rest."""
        async with self.lock:
            if self.detached or self.replay is None or not self.replay.detach():
                return
            opening = b"" if self.committed else await self._commit()
            self.detached = True
            await self.send({"type": "http.response.body", "body": opening, "more_body": False})


async def answer(
    receive: Receive,
    send: Send,
    request_id: RequestId,
    handler: StreamedHandler,
    *,
    status_for: Mapping[int, int],
    streaming: bool,
    prefer_sse: bool = False,
    headers: list[tuple[bytes, bytes]] | None = None,
    cancellation: Cancellation | None = None,
    replay: Replay | None = None,
    owner: str = "",
) -> None:
    """Run `handler(emit)` in this task and write its answer. `emit` streams a message.
    `owner` (the caller's principal) is charged for the answer bytes held meanwhile.

    With a `replay` (handshake-era sessions, SSE) the stream is resumable: a client that
    hangs up does not cancel the call (at those revisions that takes `notifications/cancelled`),
    whatever follows is kept for `GET` with `Last-Event-ID`, and past `replay.limits.poll_after`
    seconds the gateway ends the response itself while the call goes on.

    With `streaming` false (the client accepts no SSE) emitted messages are dropped. With
    `prefer_sse` even an answer with nothing before it is sent as a one-event stream. The
    client disconnecting cancels the handler (2026-07-28's cancellation); so does
    `cancellation.cancel()`, after which no answer is written (the client asked for it).
    """
    lease = payload.open_lease(owner)
    try:
        await _answer(
            receive, send, request_id, handler, status_for, streaming, prefer_sse, headers, cancellation, replay
        )
    finally:
        lease.release()  # written, or the client is gone: nothing of the answer is held any more


async def _answer(
    receive: Receive,
    send: Send,
    request_id: RequestId,
    handler: StreamedHandler,
    status_for: Mapping[int, int],
    streaming: bool,
    prefer_sse: bool,
    headers: list[tuple[bytes, bytes]] | None,
    cancellation: Cancellation | None,
    replay: Replay | None,
) -> None:
    resumable = replay if streaming else None
    stream = _Stream(send, headers or [], streaming, resumable)
    task = asyncio.current_task()
    assert task is not None
    peer_gone = False

    async def watch() -> None:
        nonlocal peer_gone
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    message = await receive()
            except TimeoutError:
                await stream.keepalive()  # commits to SSE, so idle-timeout proxies keep it open
                continue
            if message["type"] == "http.disconnect":
                if resumable is not None and (stream.detached or resumable.detach()):
                    stream.detached = True  # the call goes on; the client may resume it
                    return
                peer_gone = True
                task.cancel()
                return

    loop = asyncio.get_running_loop()
    watcher: asyncio.Task[None] | None = None

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER, start_watching)
    poll: asyncio.TimerHandle | None = None
    letting_go: asyncio.Task[None] | None = None
    if resumable is not None and resumable.limits.poll_after is not None:

        def start_letting_go() -> None:
            nonlocal letting_go
            letting_go = loop.create_task(stream.let_go())

        poll = loop.call_later(resumable.limits.poll_after, start_letting_go)
    final: Message | None
    try:
        final = jsonrpc.result(request_id, await handler(stream.emit))
    except GatewayError as exc:
        final = jsonrpc.error(request_id, exc)
    except asyncio.CancelledError:
        if not peer_gone and not (cancellation is not None and cancellation.requested):
            if resumable is not None:
                resumable.finish(stream.key)
            raise  # the server is stopping
        task.uncancel()
        final = None
    except Exception:  # the top of a request: answer, log, keep serving
        log.exception("request %r failed", request_id)
        final = jsonrpc.error(request_id, ProtocolError(INTERNAL_ERROR, "Internal error"))
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
        if poll is not None:
            poll.cancel()
    if letting_go is not None:
        await letting_go
    if peer_gone:
        if resumable is not None:
            resumable.finish(stream.key)
        return
    if resumable is not None:
        try:
            await _finish_resumable(stream, send, resumable, final)
        finally:
            if stream.detached:
                resumable.reattach()
            resumable.finish(stream.key)
        return
    async with stream.lock:
        if final is None:  # cancelled by the client: no answer, per the protocol
            if stream.committed:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await send_status(send, 204, headers=headers)
            return
        status = status_for.get(final["error"]["code"], 200) if "error" in final else 200
        pieces = _pieces(final)
        del final  # the encoded answer is all that is held from here
        if len(pieces) > 1 or len(pieces[0]) > WRITE_CHUNK:
            await _write_large(send, stream, pieces, status, prefer_sse and streaming, headers)
            return
        body = bytes(pieces[0])
        if stream.committed:
            await send({"type": "http.response.body", "body": _FRAME + body + b"\n\n", "more_body": False})
        elif prefer_sse and streaming:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + (headers or [])})
            await send({"type": "http.response.body", "body": _FRAME + body + b"\n\n"})
        else:
            await send_json(send, status, body, headers)


async def _write_large(
    send: Send,
    stream: _Stream,
    pieces: list[bytes | memoryview],
    status: int,
    as_sse: bool,
    headers: list[tuple[bytes, bytes]] | None,
) -> None:
    if stream.committed or as_sse:
        if not stream.committed:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + (headers or [])})
        await _write(send, [_FRAME, *pieces, b"\n\n"], end=True)
        return
    length = (b"content-length", str(sum(len(piece) for piece in pieces)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*JSON_HEADERS, length, *(headers or [])]})
    await _write(send, pieces, end=True)


async def _finish_resumable(stream: _Stream, send: Send, replay: Replay, final: Message | None) -> None:
    """Write (and keep, for a client that resumes) the last event of a resumable stream. An
    answer larger than the session's replay bytes is written but not kept (holding it for
    a resume would undo the bound on what answers hold): a client that missed it asks again."""
    async with stream.lock:
        opening = await stream._commit() if final is not None and not stream.committed else b""
        pieces = _pieces(final) if final is not None else []
        del final
        large = sum(len(piece) for piece in pieces) > replay.limits.bytes
        chunk = replay.record(stream.key, b"".join(pieces)) if pieces and not large else b""
        if stream.detached:
            return
        if large:
            await _write(send, [opening, _FRAME, *pieces, b"\n\n"], end=True)
        elif stream.committed:
            await send({"type": "http.response.body", "body": opening + chunk, "more_body": False})
        else:  # cancelled with notifications/cancelled before anything was written
            await send_status(send, 204, headers=stream.headers)
