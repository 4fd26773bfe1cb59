"""The HTTP server the gateway runs: uvicorn, set up the same way by `serve` and the tests.

Its HTTP/1.1 protocol is uvicorn's httptools protocol, with a response's head and body
sent in one `send`. uvicorn writes them in two `transport.write` calls and uvloop sends
each at once: two TCP segments for every answer, two syscalls on the gateway's side and
often two wake-ups on the client's. Here writes are held, and go out when the response is
complete (at once, before anything else the loop has queued, such as the audit writer's
commit of the call's completion) or, for a stream, at the end of the loop turn that wrote
them.

It also holds the limits a client meets before any ASGI code runs, so no request, however
slow or large, costs more than a bounded amount before it is refused (see `ConnectionLimits`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import socket
from collections.abc import Iterable
from typing import Any, cast

import httptools
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _Coalescing:
    """A transport that gathers the writes of one loop turn into one write."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.writelines(pending)  # one send: uvloop writev()s the buffers, a large body uncopied

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may cost before the app sees a request.

    Sizes are checked before bytes reach the parser: httptools joins the pieces of a header
    line that arrive in separate reads by bytes concatenation (and uvicorn does the same for
    the URL), so one unbounded header costs time quadratic in its size, all on the event
    loop (a 32 MiB value fed in 64 KiB reads takes ~9 s of CPU). Timers bound how long a
    connection may take to send what it owes; the connection cap bounds how many may try.
    """

    max_header_bytes: int = 32 * 1024
    """Request line and headers together; above it, 431 and close."""
    max_headers: int = 100
    header_timeout: float = 10.0
    """From the connection's opening, or the first byte of a later request, to the end of its head."""
    body_timeout: float = 30.0
    """From the end of a request's head to the end of its body."""
    max_connections: int = 1024
    """Open connections; one more is answered 503 and closed at once."""

    @classmethod
    def of(cls, settings: object) -> ConnectionLimits:
        """The limits named alike on a settings object."""
        return cls(**{field.name: getattr(settings, field.name) for field in dataclasses.fields(cls)})


_log = logging.getLogger("mcp_gateway.http")


def _refusal(status: int, reason: bytes) -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, reason, len(reason), reason)
    )


_HEAD_TOO_LARGE = _refusal(431, b"Request Header Fields Too Large")
_TIMEOUT = _refusal(408, b"Request Timeout")
_BUSY = _refusal(503, b"Service Unavailable")


class _TooManyHeaders(Exception):
    """Raised from the parser's header callback to stop the parser; answered 431."""


class HttpProtocol(HttpToolsProtocol):
    limits = ConnectionLimits()  # `config()` makes a subclass carrying the configured ones

    # Per connection: the room left for the request head being read (None while a body is
    # read), its header count, and the one timer running (head or body).
    _head_room: int | None = None
    _header_count = 0
    _timer: asyncio.TimerHandle | None = None
    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.server_state.connections) >= self.limits.max_connections:
            # Refused before it counts or is read from: the cap holds however slow the others are.
            self._refused = True
            _log.debug("connection refused: %d open", len(self.server_state.connections))
            transport.write(_BUSY)  # type: ignore[attr-defined]
            transport.close()
            return
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._out = _Coalescing(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(self._out)  # type: ignore[arg-type]
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # A head is fed to the parser no further than its room: the parser never holds more
        # than `max_header_bytes` of one, whatever a read brings. A head that begins inside
        # a read that also ends a body (a pipelined request) is counted from the next read
        # on: undercounted by at most one read, still bounded.
        view = memoryview(data)
        while view and not self.transport.is_closing():
            if self._head_room is None:
                piece, view = view, view[:0]
            else:
                if self._timer is None:
                    self._timer = self.loop.call_later(self.limits.header_timeout, self._timed_out)
                piece, view = view[: self._head_room], view[self._head_room :]
                self._head_room -= len(piece)
            self._feed(piece)
            if self._head_room == 0 and not self.transport.is_closing():
                self._refuse(_HEAD_TOO_LARGE, "request head over the limit")

    def _feed(self, data: memoryview) -> None:
        """uvicorn's `data_received`, with a head of too many headers answered 431."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_timer()  # the connection is another protocol's now
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._header_count > self.limits.max_headers:
                self._refuse(_HEAD_TOO_LARGE, "too many request headers")
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_room = None
        self._stop_timer()
        self._timer = self.loop.call_later(self.limits.body_timeout, self._timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_timer()
        self._start_head()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._out.flush()  # a finished answer goes out now
        super().on_response_complete()

    def _start_head(self) -> None:
        """The next bytes begin a request head: its room is whole, its timer starts with the
        connection or (on a kept-alive one, which uvicorn's idle timeout covers until then)
        with its first byte."""
        self._head_room = self.limits.max_header_bytes
        if self.cycle is None:
            self._timer = self.loop.call_later(self.limits.header_timeout, self._timed_out)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._refuse(_TIMEOUT, "request head or body not received in time")

    def _refuse(self, answer: bytes, why: str) -> None:
        """Answer `answer` unless a response has begun, and close; a running app sees a disconnect."""
        _log.debug("%s:%s: %s", *(self.client or ("?", "?")), why)
        self._stop_timer()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.write(answer)
        else:
            if not cycle.response_started:
                self.transport.write(answer)
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


class Server(uvicorn.Server):
    """uvicorn's server, its started app exempt from the cyclic garbage collector.

    A full collection walks every tracked object: the gateway holds well over 100,000 after
    startup (modules, schemas, the catalog), and each full walk held the event loop for
    0.3-0.5 s on a busy machine, more often the more connections come and go (what an
    attack does). What exists once the app has started lives as long as the process, so
    it is collected once and then frozen; later collections walk only what came after.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        gc.collect()
        gc.freeze()


def config(app: ASGIApp, log_level: str = "info", limits: ConnectionLimits | None = None) -> uvicorn.Config:
    protocol = type("HttpProtocol", (HttpProtocol,), {"limits": limits}) if limits is not None else HttpProtocol
    return uvicorn.Config(
        app,
        http=protocol,
        log_level=log_level,
        lifespan="on",
        access_log=False,
        # The client's address stays the socket's peer: no X-Forwarded-For can make a remote
        # caller look local to the admin API's loopback-only open door.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=5,
    )
