"""The upstream HTTP/1.1 client (proxy/http11.py) against a raw socket server that sends
exactly the bytes each test names: what the client makes of interim responses, bodies
that end with the connection, chunked framing, framing that could smuggle a response, and
what it writes (the Host header, header values)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mcp_gateway.errors import UpstreamError
from mcp_gateway.jsonrpc import Message, RequestId
from mcp_gateway.proxy import http11
from mcp_gateway.proxy.http_client import HttpTransport

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Upstream:
    """A raw server: each connection's requests are read whole and kept; `handler` answers."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        self.url = ""

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        raw = head + await reader.readexactly(length)
        self.requests.append(raw)
        return raw


@asynccontextmanager
async def upstream(
    handler: Callable[[Upstream, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], host: str = "127.0.0.1"
) -> AsyncIterator[Upstream]:
    state = Upstream()

    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(state, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # a handler still waiting when the test is over is ended quietly
        finally:
            writer.close()

    server = await asyncio.start_server(serve, host, 0)
    port = server.sockets[0].getsockname()[1]
    state.url = f"http://[{host}]:{port}/mcp" if ":" in host else f"http://{host}:{port}/mcp"
    try:
        yield state
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers)
        await server.wait_closed()


def replies(
    *answers: bytes, close: bool = False
) -> Callable[[Upstream, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """Answer each request on a connection with the next bytes; then close, if told, or wait."""

    async def handler(state: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await state.read_request(reader)
            writer.write(answer)
            await writer.drain()
        if close:
            return
        await reader.read()  # until the client closes

    return handler


async def fetch(pool: http11.Pool, body: bytes = b"{}") -> tuple[http11.Response, bytes]:
    response, _ = await pool.request("POST", {"content-type": "application/json"}, body)
    return response, await response.read()


# -- interim and final responses ---------------------------------------------------------


async def test_an_interim_1xx_response_is_skipped_and_the_final_answer_read() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    async with upstream(replies(answer, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")) as server:
        pool = http11.Pool(server.url)
        try:
            response, body = await fetch(pool)
            assert (response.status, body) == (200, b"{}")
            assert "link" not in response.headers  # the interim response's headers are not the answer's
            response, body = await fetch(pool)  # the connection is still in step
            assert (response.status, body, server.connections) == (200, b"next", 1)
        finally:
            pool.close()


async def test_a_101_switching_protocols_is_refused() -> None:
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw bytes"
    async with upstream(replies(answer)) as server:
        pool = http11.Pool(server.url)
        try:
            with pytest.raises(http11.HttpError):
                await fetch(pool)
        finally:
            pool.close()


# -- bodies that end with the connection ---------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",  # no length on a keep-alive connection
    ],
    ids=["connection close", "HTTP/1.0", "keep-alive without length"],
)
async def test_a_body_delimited_by_the_connection_closing_is_read_whole(head: bytes) -> None:
    async with upstream(replies(head + b'{"jsonrpc":"2.0",', close=True)) as server:
        pool = http11.Pool(server.url)
        try:
            response, _ = await pool.request("POST", {}, b"{}")
            chunks = [chunk async for chunk in response.chunks()]
            assert b"".join(chunks) == b'{"jsonrpc":"2.0",'
            assert response.complete
            response, body = await fetch(pool)  # that connection is not reused: a new one answers
            assert body == b'{"jsonrpc":"2.0",' and server.connections == 2
        finally:
            pool.close()


async def test_a_body_cut_short_of_its_content_length_is_an_error() -> None:
    async with upstream(replies(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True)) as server:
        pool = http11.Pool(server.url)
        try:
            with pytest.raises(http11.HttpError):
                await fetch(pool)
        finally:
            pool.close()


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_a_204_or_304_has_no_body_and_the_connection_stays_in_step(status: bytes) -> None:
    async with upstream(
        replies(b"HTTP/1.1 " + status + b"\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    ) as server:
        pool = http11.Pool(server.url)
        try:
            response, body = await fetch(pool)
            assert (response.status, body) == (int(status[:3]), b"")
            response, body = await fetch(pool)
            assert (response.status, body, server.connections) == (200, b"ok", 1)
        finally:
            pool.close()


async def test_a_server_that_closes_mid_headers_is_an_error() -> None:
    async with upstream(replies(b"HTTP/1.1 200 OK\r\nContent-Le", close=True)) as server:
        pool = http11.Pool(server.url)
        try:
            with pytest.raises(http11.HttpError):
                await fetch(pool)
        finally:
            pool.close()


async def test_an_oversized_header_block_is_refused() -> None:
    async def endless_header(state: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await state.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        for _ in range(64):  # 4 MiB of one header value, never ended
            writer.write(b"a" * 65536)
            await writer.drain()

    async with upstream(endless_header) as server:
        pool = http11.Pool(server.url)
        try:
            with pytest.raises(http11.HttpError, match="header"):
                await fetch(pool)
        finally:
            pool.close()


async def test_an_endless_trailer_section_is_refused_at_the_header_cap() -> None:
    async def endless_trailer(state: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await state.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: ")
        for _ in range(64):  # 4 MiB of one trailer value, never ended
            writer.write(b"a" * 65536)
            await writer.drain()

    async with upstream(endless_trailer) as server:
        pool = http11.Pool(server.url)
        try:
            with pytest.raises(http11.HttpError, match="trailer"):
                await fetch(pool)
        finally:
            pool.close()


# -- chunked framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'5;name=value\r\nhello\r\n6;a=b;c="d"\r\n world\r\n0\r\n\r\n',
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n",
        b"0005\r\nhello\r\n0006\r\n world\r\n000\r\n\r\n",
    ],
    ids=["chunk extensions", "trailers", "leading zeros"],
)
async def test_chunked_bodies_are_read_whole_and_the_connection_stays_in_step(body: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with upstream(replies(head + body, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as server:
        pool = http11.Pool(server.url)
        try:
            response, data = await fetch(pool)
            assert data == b"hello world"
            assert "x-checksum" not in response.headers or response.headers["x-checksum"] == "1"
            response, data = await fetch(pool)
            assert (data, server.connections) == (b"ok", 1)
        finally:
            pool.close()


@pytest.mark.parametrize(
    ("body", "close"),
    [
        (b"FFFFFFFFFFFFFFFFFF\r\nhello", False),
        (b"zz\r\nhello\r\n0\r\n\r\n", False),
        (b"a\r\nhello", True),
        (b"5\r\nhello\r\n", True),
    ],
    ids=["chunk size too large", "chunk size not hex", "truncated chunk", "no last chunk"],
)
async def test_broken_chunked_framing_is_an_error_not_a_short_body(body: bytes, close: bool) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with upstream(replies(head + body, close=close)) as server:
        pool = http11.Pool(server.url)
        try:
            with pytest.raises(http11.HttpError):
                await fetch(pool)
        finally:
            pool.close()


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ],
    ids=["length then chunked", "chunked then length", "two lengths"],
)
async def test_ambiguous_framing_is_refused(head: bytes) -> None:
    """Either framing read one way leaves the rest to be taken as the next answer: smuggling."""
    async with upstream(replies(head + b"5\r\nhello\r\n0\r\n\r\n")) as server:
        pool = http11.Pool(server.url)
        try:
            with pytest.raises(http11.HttpError):
                await fetch(pool)
        finally:
            pool.close()


# -- long-lived streams ---------------------------------------------------------------------------


async def test_a_stream_read_as_it_comes_may_carry_more_than_the_body_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "MAX_BODY", 256 * 1024)
    event = b"data: " + b"x" * 8000 + b"\n\n"

    async def stream(state: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await state.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(128):  # 1 MiB over the life of the stream, each piece taken before the next
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await reader.read()

    async with upstream(stream) as server:
        pool = http11.Pool(server.url)
        try:
            response, _ = await pool.request("GET", {"accept": "text/event-stream"})
            total = 0
            async for chunk in response.chunks():
                total += len(chunk)
            assert total == 128 * len(event)
        finally:
            pool.close()


async def test_a_whole_body_read_at_once_is_still_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "MAX_BODY", 64 * 1024)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
    async with upstream(replies(answer)) as server:
        pool = http11.Pool(server.url)
        try:
            with pytest.raises(http11.HttpError, match="exceeded"):
                await fetch(pool)
        finally:
            pool.close()


async def test_a_reader_that_does_not_read_pauses_the_connection() -> None:
    sent = 0
    done = asyncio.Event()

    async def flood(state: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await state.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        try:
            while sent < 64 * 1024 * 1024:
                writer.write(b"x" * 65536)
                sent += 65536
                await asyncio.wait_for(writer.drain(), 0.5)  # held back by TCP: the client stopped reading
        except TimeoutError:
            pass
        done.set()
        await reader.read()

    async with upstream(flood) as server:
        pool = http11.Pool(server.url)
        try:
            response, conn = await pool.request("GET", {})
            await done.wait()
            assert sent < 64 * 1024 * 1024
            assert response._buffered <= http11.READ_AHEAD + 1024 * 1024  # what was held, not what was sent
            pool.abort(conn)
        finally:
            pool.close()


async def test_a_reader_of_a_body_already_received_gives_the_loop_a_turn_every_turn_bytes() -> None:
    # Chunks already in are handed over without waiting: without a turn given back, one
    # reader would take (and scan) everything buffered while every other call waits.
    response = http11.Response()
    chunk = b"x" * 65536
    for _ in range(64):
        response._push(chunk)
    response._push(None)
    turns = 0

    async def tick() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    seen, in_turn, most, total = turns, 0, 0, 0
    async for piece in response.chunks():
        if turns != seen:
            seen, in_turn = turns, 0
        in_turn += len(piece)
        most, total = max(most, in_turn), total + len(piece)
    ticker.cancel()
    assert total == 64 * len(chunk)
    assert most <= http11.TURN_BYTES


# -- what the client writes ---------------------------------------------------------------------------


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 loopback here")
async def test_an_ipv6_upstream_gets_a_bracketed_host_header() -> None:
    async with upstream(replies(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), host="::1") as server:
        pool = http11.Pool(server.url)
        try:
            await fetch(pool)
            port = server.url.split("]:")[1].split("/")[0]
            assert f"\r\nhost: [::1]:{port}\r\n".encode() in server.requests[0]
        finally:
            pool.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-note", "a\r\nInjected: 1"),
        ("x-note", "a\nInjected: 1"),
        ("x-note", "a\rb"),
        ("x-note", "a\0b"),
        ("x-note\r\nInjected", "1"),
        ("x note", "1"),
        ("", "1"),
        ("x-note", "\u20ac"),
    ],
    ids=[
        "CRLF in a value",
        "LF in a value",
        "CR in a value",
        "NUL in a value",
        "CRLF in a name",
        "space in a name",
        "empty name",
        "not Latin-1",
    ],
)
async def test_a_header_that_could_inject_another_is_refused_before_a_byte_is_sent(name: str, value: str) -> None:
    async with upstream(replies(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
        pool = http11.Pool(server.url)
        try:
            with pytest.raises(http11.InvalidHeader):
                await pool.request("POST", {name: value}, b"{}")
            await asyncio.sleep(0.05)
            assert server.requests == []
            assert (await fetch(pool))[0].status == 200  # the pool is fine for the next request
        finally:
            pool.close()


async def test_a_request_derived_header_with_a_line_break_fails_its_call_and_nothing_is_sent() -> None:
    fed: list[tuple[Message, RequestId | None]] = []

    async def feed(message: Message, request_id: RequestId | None) -> None:
        fed.append((message, request_id))

    async with upstream(replies(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
        transport = HttpTransport("up", server.url, {}, feed)
        try:
            call: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t"}}
            await transport.send(call, {"mcp-param-x": "a\r\nInjected: 1"})
            assert server.requests == []
            ((message, request_id),) = fed
            assert request_id == 1 and "error" in message and "header" in message["error"]["message"]
            assert not transport.broken.is_set() and not transport.suspect.is_set()  # the upstream is fine
        finally:
            transport.close()


async def test_a_configured_upstream_header_with_a_line_break_is_refused_at_once() -> None:
    async def feed(message: Message, request_id: RequestId | None) -> None:
        pass

    with pytest.raises(UpstreamError, match="header 'x-tenant'"):
        HttpTransport("up", "http://127.0.0.1:9/mcp", {"x-tenant": "a\r\nInjected: 1"}, feed)


async def test_a_body_ending_at_close_is_cut_short_not_ended_when_the_gateway_closes_the_connection() -> None:
    async def partial(state: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await state.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"jsonrpc":')
        await writer.drain()
        await reader.read()

    async with upstream(partial) as server:
        pool = http11.Pool(server.url)
        response, _ = await pool.request("POST", {}, b"{}")
        assert await anext(response.chunks()) == b'{"jsonrpc":'
        pool.close()  # the gateway lets go (a shutdown), not the server's end of the body
        with pytest.raises(http11.HttpError):
            await response.read()
