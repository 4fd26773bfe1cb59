"""The HTTP server sends a JSON answer whole: head and body in one TCP segment.

Counted by the kernel: `tcpi_data_segs_in` of the client's socket (Linux's `TCP_INFO`) says
how many segments carrying data arrived, so a head and a body sent by two `send`s show as
two. The gateway runs under the same uvicorn setup as `mcp-gateway serve`, on loopback (as
does every test that serves it, so streamed answers are covered by the rest of the suite).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from ..support import serve, serving, stdio_upstream, wait_ready, write_config

pytestmark = pytest.mark.anyio

TCPI_DATA_SEGS_IN = 152
"""Offset of `tcpi_data_segs_in` in `struct tcp_info` (Linux 4.6 and later)."""

MODERN_CALL = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {
        "name": "everything__echo",
        "arguments": {"text": "one segment"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    assert len(info) >= TCPI_DATA_SEGS_IN + 4, "this kernel's TCP_INFO has no tcpi_data_segs_in"
    return int(struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0])


def request(port: int, accept: str, *extra: str) -> bytes:
    body = json.dumps(MODERN_CALL).encode()
    head = (
        "POST /mcp HTTP/1.1\r\n"
        f"host: 127.0.0.1:{port}\r\n"
        "content-type: application/json\r\n"
        f"accept: {accept}\r\n"
        "mcp-protocol-version: 2026-07-28\r\n"
        "mcp-method: tools/call\r\n"
        "mcp-name: everything__echo\r\n"
        + "".join(f"{line}\r\n" for line in extra)
        + f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """Head and body of one response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head, body


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[int]:
    async with serve(write_config(tmp_path, {"everything": stdio_upstream()})) as (url, running):
        await wait_ready(running)
        yield int(url.rsplit(":", 1)[1].split("/")[0])


def exchange(port: int, accept: str, rounds: int) -> list[tuple[int, bytes, bytes]]:
    """`rounds` calls on one keep-alive connection: (data segments the answer took, head, body)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answers = []
        for _ in range(rounds):
            before = data_segments_in(sock)
            sock.sendall(request(port, accept))
            head, body = read_response(sock)
            answers.append((data_segments_in(sock) - before, head, body))
        return answers


async def test_a_json_answer_arrives_in_one_segment(port: int) -> None:
    answers = await anyio.to_thread.run_sync(exchange, port, "application/json, text/event-stream", 5)
    for segments, head, body in answers:
        assert head.startswith(b"HTTP/1.1 200"), head
        assert json.loads(body)["result"]["content"][0]["text"] == "one segment"
        assert segments == 1, f"the answer came in {segments} segments"


async def test_an_answer_before_the_connection_closes_is_sent_whole(port: int) -> None:
    """`Connection: close`: the server writes the answer and closes at once; the held
    write goes out before the close."""

    def once() -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request(port, "application/json", "connection: close"))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    data = await anyio.to_thread.run_sync(once)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["result"]["content"][0]["text"] == "one segment"


async def test_a_finished_answer_goes_out_before_the_loop_runs_anything_else() -> None:
    """The answer is written when it is complete, not when the loop next gets round to it:
    here the app, having answered, holds the event loop until the client has read the
    answer. Were the write held for a later turn of the loop, the client would wait in vain."""
    released = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        body = b'{"answered":true}'
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"17")]})
        await send({"type": "http.response.body", "body": body})
        released.wait(10)  # what a long synchronous step after the answer would do to the loop

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode())
            try:
                return read_response(sock)[1]
            except TimeoutError:
                return b""
            finally:
                released.set()

    async with serving(app) as port:
        body = await anyio.to_thread.run_sync(client, port)
    assert body == b'{"answered":true}'
