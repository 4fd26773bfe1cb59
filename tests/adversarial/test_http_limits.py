"""Break 6 of issue 11: what a client can cost the gateway before it is authenticated.

Real uvicorn, set up as `serve` sets it up, on loopback; clients are raw sockets doing
what an attacker does: a head that never ends, a head far over the limit, a body that
stalls, more connections than the cap. The limits are shortened so each test ends fast.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from mcp_gateway.transport.server import ConnectionLimits

from ..support import serving

pytestmark = pytest.mark.anyio

LIMITS = ConnectionLimits(
    max_header_bytes=8192, max_headers=20, header_timeout=0.5, body_timeout=0.5, max_connections=4
)
GUARD = 15.0
"""Seconds a client waits for an answer before the test gives up on it."""


class App:
    """Answers every request with the length of its body; records what it was told."""

    def __init__(self) -> None:
        self.disconnected = anyio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = str(size).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
async def port(app: App) -> AsyncIterator[int]:
    async with serving(app, LIMITS) as port:
        yield port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a reset after an answer counts as a close."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def read_answer(sock: socket.socket) -> bytes:
    """One answer with a Content-Length, head and body, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def get(port: int) -> bytes:
    return f"GET / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode()


async def in_thread(function: Any, *args: Any) -> Any:
    with anyio.fail_after(GUARD + 5):
        return await anyio.to_thread.run_sync(function, *args)


async def test_a_head_over_the_limit_is_answered_431_and_closed(port: int) -> None:
    def client() -> bytes:
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 3 * LIMITS.max_header_bytes)
            return read_until_closed(sock)

    answer = await in_thread(client)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"connection: close" in answer


async def test_a_huge_header_is_cut_off_long_before_it_is_read(port: int) -> None:
    """32 MiB of header: the server stops reading at the limit and closes, so the client's
    send fails once the kernel buffers between the two are full, long before the end."""
    total = 32 * 1024 * 1024

    def client() -> int:
        sent = 0
        chunk = b"a" * 65536
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nx-big: ")
            try:
                while sent < total:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (ConnectionResetError, BrokenPipeError):
                pass
        return sent

    sent = await in_thread(client)
    assert sent < total // 2, f"the server read {sent} bytes of header"


async def test_too_many_headers_are_answered_431(port: int) -> None:
    def client() -> bytes:
        lines = "".join(f"x-{n}: {n}\r\n" for n in range(LIMITS.max_headers + 1))
        with connect(port) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\n{lines}\r\n".encode())
            return read_until_closed(sock)

    answer = await in_thread(client)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


async def test_a_head_within_the_limits_with_a_large_body_in_the_same_read_is_served(port: int) -> None:
    """Only the head counts against the head limit, however much body arrives with it; and
    pipelined requests, each head within the limit, are answered in turn."""
    body = b"x" * (4 * LIMITS.max_header_bytes)
    headers = "".join(f"x-{n}: {'v' * 100}\r\n" for n in range(LIMITS.max_headers - 2))
    post = f"POST / HTTP/1.1\r\nhost: h\r\n{headers}content-length: {len(body)}\r\n\r\n".encode() + body
    pipelined = f"GET / HTTP/1.1\r\nhost: h\r\n{headers}\r\n".encode() * 3

    def client() -> list[bytes]:
        with connect(port) as sock:
            sock.sendall(post)
            answers = [read_answer(sock)]
            sock.sendall(pipelined)
            return answers + [read_answer(sock) for _ in range(3)]

    answers = await in_thread(client)
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 4
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [str(len(body)).encode(), b"0", b"0", b"0"]


async def test_an_unfinished_head_is_closed_after_the_header_timeout(port: int) -> None:
    def client() -> bytes:
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: a")
            return read_until_closed(sock)

    answer = await in_thread(client)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


async def test_a_silent_connection_is_closed_after_the_header_timeout(port: int) -> None:
    def client() -> bytes:
        with connect(port) as sock:
            return read_until_closed(sock)

    answer = await in_thread(client)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


async def test_a_kept_alive_connection_that_begins_a_head_and_stalls_is_closed(port: int) -> None:
    """uvicorn's keep-alive timer stops at the first byte of the next request; the header
    timer takes over from there."""

    def client() -> tuple[bytes, bytes]:
        with connect(port) as sock:
            sock.sendall(get(port))
            first = read_answer(sock)
            sock.sendall(b"G")
            return first, read_until_closed(sock)

    first, answer = await in_thread(client)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


async def test_a_stalled_body_is_ended_after_the_body_timeout_and_the_app_sees_a_disconnect(
    port: int, app: App
) -> None:
    def client() -> bytes:
        with connect(port) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
            return read_until_closed(sock)

    answer = await in_thread(client)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    with anyio.fail_after(GUARD):
        await app.disconnected.wait()


async def test_connections_over_the_cap_are_refused_while_open_ones_are_served(app: App) -> None:
    def client(port: int) -> tuple[bytes, bytes, bytes]:
        with connect(port) as served:
            served.sendall(get(port))
            first = read_answer(served)
            idle = [connect(port) for _ in range(LIMITS.max_connections - 1)]
            try:
                with connect(port) as refused:
                    refusal = read_until_closed(refused)
                served.sendall(get(port))
                return first, refusal, read_answer(served)
            finally:
                for sock in idle:
                    sock.close()

    # Connections that wait without a request are what fills the cap here: none may time out first.
    async with serving(app, dataclasses.replace(LIMITS, header_timeout=GUARD * 2)) as port:
        first, refusal, again = await in_thread(client, port)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert refusal.startswith(b"HTTP/1.1 503 "), refusal[:100]
    assert again.startswith(b"HTTP/1.1 200 ")
