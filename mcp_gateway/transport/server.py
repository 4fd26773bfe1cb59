"""The HTTP server the gateway runs: uvicorn, set up the same way by `serve` and the tests.

Its HTTP/1.1 protocol is uvicorn's httptools protocol, with what a response writes in one
turn of the event loop sent in one `send`.

uvicorn writes a response's head and its body in two `transport.write` calls, and uvloop
sends each at once: two TCP segments for every answer, two syscalls on the gateway's side
and often two wake-ups on the client's. A JSON answer is written start and body in the
same turn of the loop, so holding writes until the end of that turn sends it whole. A
stream's later chunks are each written in a turn of their own, and go out at the end of
it: nothing waits longer than the callbacks already queued.
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
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        super().connection_made(_Coalescing(cast(asyncio.Transport, transport), self.loop))  # type: ignore[arg-type]


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
