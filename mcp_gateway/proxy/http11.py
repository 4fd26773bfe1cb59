"""A small HTTP/1.1 client for upstream requests: keep-alive connections, streamed bodies.

Why not a general-purpose client: every call through the gateway makes one upstream
request, so the client's cost per request is the gateway's. `bench/http_client.py`
measures it: this client, which leaves parsing to httptools (the C parser uvicorn uses)
and does nothing MCP does not need, spent ~20-27 us of CPU per request where aiohttp
spent ~70-90 and httpcore/httpx's transport ~280-410. What it leaves out on purpose:
redirects (never followed upstream), proxies from the environment, HTTP/2, cookies.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from ..sensitive import mask_urls

MAX_BODY = 64 * 1024 * 1024
"""The most `Response.read()` gathers. A body read as it comes (`chunks()`) is not counted
here: its reader bounds what it keeps, and READ_AHEAD bounds what waits for it, so a
long-lived stream may carry any amount over its life."""
MAX_HEAD = 64 * 1024
"""The most a response's status line and headers (interim responses included) may take,
and its trailer section, and any one chunk's size line: bytes that are not body, which the
parser gathers before it hands them over."""
READ_AHEAD = 1024 * 1024
"""Body bytes received and not yet taken by the reader past which the connection stops
reading (the upstream is held back by TCP) until the reader catches up: a reader slower
than its upstream costs this, not the whole body."""
TURN_BYTES = 256 * 1024
"""Body bytes handed to a reader before it is made to give the loop a turn. Chunks already
received are handed over without waiting, so without this a reader takes everything
buffered for it (up to READ_AHEAD and a read) in one turn, with whatever it does to each
chunk: with four 50 MiB answers being read, the loop's turns took ~27 ms of CPU each, and
a small call, which needs several turns, waited ~200 ms. Counted in bytes, not time: a
clock read per chunk would cost the small answers, which are the hot path."""
IDLE_SECONDS = 4.0
"""Connections idle longer are not reused: servers close idle ones (uvicorn after 5 s),
and a request written into a connection as it closes would fail for no reason."""


class HttpError(OSError):
    """The connection failed or the response could not be read."""


class ConnectError(HttpError):
    """No connection could be made: the server is not there."""


class InvalidHeader(ValueError):
    """A request header that could not be written as one header line: nothing was sent."""


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_header(name: str, value: str) -> None:
    """Refuse a header that would not be one header line: a name that is not a token, a
    value with CR, LF or NUL (which would end the line and start another: injection)."""
    if not _TOKEN.fullmatch(name):
        raise InvalidHeader(f"header name {name!r} is not an HTTP token")
    if "\r" in value or "\n" in value or "\0" in value:
        raise InvalidHeader(f"header {name!r} has a CR, LF or NUL in its value")


class Response:
    """A response being received: status and headers once they are in, then the body as
    it arrives (`chunks()`, or `read()` for all of it)."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_error",
        "_handed",
        "_paused",
        "_waiter",
        "complete",
        "headers",
        "status",
    )

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        self._chunks: deque[bytes | None] = deque()  # None ends the body
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._buffered = 0
        self._paused: asyncio.Transport | None = None
        """The connection's transport while its reading is paused for this response."""
        self._conn: _Connection | None = None
        self._handed = 0
        """Body bytes handed to the reader since it last waited (see TURN_BYTES)."""

    def _push(self, chunk: bytes | None) -> None:
        self._chunks.append(chunk)
        if chunk is not None:
            self._buffered += len(chunk)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next(self) -> bytes | None:
        if self._handed >= TURN_BYTES and self._chunks:
            self._handed = 0
            await asyncio.sleep(0)  # the loop's turn: other calls, and the sockets' reads
        while not self._chunks:
            self._handed = 0
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        if chunk is not None:
            self._buffered -= len(chunk)
            self._handed += len(chunk)
            if self._paused is not None and self._buffered < READ_AHEAD // 2:
                transport, self._paused = self._paused, None
                if not transport.is_closing():
                    transport.resume_reading()
        if chunk is None:
            self._chunks.appendleft(None)  # the end stays the end
            if self._error is not None:
                raise HttpError(str(self._error)) from self._error
        return chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._next()) is not None:
            yield chunk

    async def read(self) -> bytes:
        """The whole body, up to MAX_BODY; past it the connection is dropped."""
        parts: list[bytes] = []
        size = 0
        while (chunk := await self._next()) is not None:
            size += len(chunk)
            if size > MAX_BODY:
                parts.clear()
                if self._conn is not None:
                    self._conn.close()
                raise HttpError(f"the response exceeded {MAX_BODY} bytes")
            parts.append(chunk)
        return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.headers_ready: asyncio.Future[Response] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._head_done = False
        self._overhead = 0
        """Bytes received that are not body, since the request or the last chunk's end."""
        self._interim = False
        self._until_close = False
        """The body is delimited by the connection's close (no length, not chunked)."""

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # nothing was asked: whatever this is, the connection is out of step
            self.close()
            return
        self._overhead += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(HttpError(f"invalid HTTP response: {exc}"))
            self.close()
            return
        if self._overhead > MAX_HEAD:
            part = "trailer section or a chunk's size line" if self._head_done else "header block"
            self._fail(HttpError(f"the response's {part} exceeded {MAX_HEAD} bytes"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        by_server, self.closed = not self.closed, True
        response = self.response
        if response is not None and not response.complete:
            if exc is None and by_server and self._until_close and self._head_done:
                # The close is the body's end (RFC 9112 6.3): the response is whole.
                self.response = None
                response.complete = True
                response._push(None)
            else:
                self._fail(exc or HttpError("the server closed the connection"))
        self.pool.forget(self)

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.response.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:  # never asked for: the connection would stop being HTTP
                raise HttpError("the server switched protocols")
            # An interim response (100 Continue, 103 Early Hints): the answer is still to come.
            self._interim = True
            response.headers = {}
            return
        response.status = status
        self._head_done = True
        self._overhead = 0  # what follows in this read is counted again, as body taken off: a read's slack
        headers = response.headers
        coding = headers.get("transfer-encoding")
        chunked = coding is not None and coding.rpartition(",")[2].strip().lower() == "chunked"
        self._until_close = not chunked and "content-length" not in headers and status not in (204, 304)
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_result(response)

    def on_body(self, body: bytes) -> None:
        self._overhead -= len(body)
        if self.response is not None:
            response = self.response
            response._push(body)
            if response._buffered > READ_AHEAD and response._paused is None and self.transport is not None:
                self.transport.pause_reading()
                response._paused = self.transport

    def on_chunk_complete(self) -> None:
        self._overhead = 0

    def on_message_complete(self) -> None:
        if self._interim:  # the end of an interim response: the parser reads on to the final one
            self._interim = False
            return
        response, self.response = self.response, None
        if response is None:
            return
        response.complete = True
        response._push(None)
        if response._paused is not None:  # nothing more comes for it: the connection reads on
            response._paused = None
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()
        if self.parser.should_keep_alive() and not self.closed:
            self.parser = httptools.HttpResponseParser(self)
            self.pool.release(self)
        else:
            self.close()

    # -- use -----------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        response = self.response
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(HttpError(str(exc)))
        if response is not None and not response.complete:
            response._error = exc
            response.complete = True
            response._push(None)
        self.response = None

    def send(self, head: bytes, body: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.response = Response()
        self.response._conn = self
        self._overhead = 0
        self._interim = self._until_close = self._head_done = False
        self.headers_ready = asyncio.get_running_loop().create_future()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self.headers_ready

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Pool:
    """Keep-alive connections to one origin."""

    def __init__(self, url: str, max_idle: int = 256, connect_timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {mask_urls(url)!r}")
        self.host = parts.hostname
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        self.authority = host if default_port else f"{host}:{self.port}"
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._names: set[str] = set()
        """Header names already found to be tokens."""

    def release(self, conn: _Connection) -> None:
        """A connection whose exchange is over: keep it for the next request."""
        if conn.closed:
            return
        if len(self._idle) < self.max_idle:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {self.authority}: {exc}") from None
        self._all.add(conn)
        return conn

    def _head(self, method: str, headers: dict[str, str], length: int | None) -> bytes:
        lines = [f"{method} {self.path} HTTP/1.1", f"host: {self.authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if length is not None:
            lines.append(f"content-length: {length}")
        text = "\r\n".join(lines)
        # Each CR and LF is one of the line ends just put there, and no NUL: no header was
        # able to end its line and start another. Otherwise, find which and refuse it.
        breaks = len(lines) - 1
        if text.count("\n") != breaks or text.count("\r") != breaks or "\0" in text:
            for name, value in headers.items():
                check_header(name, value)
            raise InvalidHeader("the request line has a CR, LF or NUL")
        for name in headers:
            if name not in self._names:
                check_header(name, "")
                if len(self._names) >= 4096:
                    self._names.clear()
                self._names.add(name)
        try:
            return (text + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidHeader("a header value is not Latin-1 text") from None

    async def request(self, method: str, headers: dict[str, str], body: bytes = b"") -> tuple[Response, _Connection]:
        """Send a request; returns once the response's headers are in. Read its body from
        `Response.chunks()`; `abort(conn)` drops the connection (a cancelled stream)."""
        head = self._head(method, headers, len(body) if body or method in ("POST", "PUT") else None)
        conn: _Connection | None = None
        try:
            now = asyncio.get_running_loop().time()
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.closed and now - candidate.idle_since < IDLE_SECONDS:
                    conn = candidate
                    break
                candidate.close()
            if conn is None:
                conn = await self._connect()
            # Never retried: the request may have reached the server, and a tool call must not run twice.
            response = await conn.send(head, body)
            return response, conn
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    def abort(self, conn: _Connection) -> None:
        """Give up on a response being read: the connection cannot be reused."""
        if conn.response is not None:
            conn.response = None
            conn.close()

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
