"""The HTTP server the gateway runs: uvicorn, set up the same way by `serve` and the tests.

Its HTTP/1.1 protocol is uvicorn's httptools protocol, with a response's head and body
sent in one `send`. uvicorn writes them in two `transport.write` calls and uvloop sends
each at once: two TCP segments for every answer, two syscalls on the gateway's side and
often two wake-ups on the client's. Here writes are held, and go out when the response is
complete (at once, before anything else the loop has queued, such as the audit writer's
commit of the call's completion) or, for a stream, at the end of the loop turn that wrote
them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

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


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._out = _Coalescing(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(self._out)  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self._out.flush()  # a finished answer goes out now
        super().on_response_complete()


def config(app: ASGIApp, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=HttpProtocol,
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
