"""The stdio transport's framing, over a stand-in child process whose pipes are in memory:
one JSON-RPC message per line, bad lines skipped, an oversized line ends the connection."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from mcp_gateway.errors import UpstreamError
from mcp_gateway.jsonrpc import Message, RequestId
from mcp_gateway.proxy import stdio_client
from mcp_gateway.proxy.stdio_client import StdioTransport

pytestmark = pytest.mark.anyio


class Pipe:
    """The read end of a pipe: `receive(max_bytes)` as a byte stream has it."""

    def __init__(self) -> None:
        self.writer, self._reader = anyio.create_memory_object_stream[bytes](100)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._reader.receive()

    def close(self) -> None:
        self.writer.close()
        self._reader.close()


class FakeProcess:
    """A child whose stdout the test writes and whose stdin the test reads."""

    def __init__(self) -> None:
        self.stdout = Pipe()
        self.write_stdout = self.stdout.writer
        self.stdin_sent: list[bytes] = []
        self.stdin: Any = self
        self.returncode: int | None = None

    async def send(self, data: bytes) -> None:  # the child's stdin
        self.stdin_sent.append(data)

    async def wait(self) -> int | None:
        return self.returncode

    def close(self) -> None:
        self.stdout.close()


async def read_all(chunks: list[bytes], returncode: int | None = None) -> tuple[list[Message], StdioTransport]:
    """Run the stdout reader over `chunks` (then end of file); what it fed, and the transport."""
    process = FakeProcess()
    transport = StdioTransport("up", process)  # type: ignore[arg-type]
    fed: list[Message] = []

    async def feed(message: Message, related: RequestId | None) -> None:
        fed.append(message)

    for chunk in chunks:
        process.write_stdout.send_nowait(chunk)
    process.write_stdout.close()
    process.returncode = returncode
    try:
        with anyio.fail_after(5):
            await transport.read_stdout(feed)
    finally:
        process.close()
    return fed, transport


async def test_each_line_is_one_message_even_when_split_across_reads_and_blank_lines_are_skipped() -> None:
    fed, _ = await read_all([b'{"jsonrpc":"2.0","id":1,"res', b'ult":{}}\n\n{"jsonrpc":"2.0","method":"n"}\r\n'])
    assert fed == [{"jsonrpc": "2.0", "id": 1, "result": {}}, {"jsonrpc": "2.0", "method": "n"}]


async def test_a_line_that_is_not_json_rpc_is_skipped_with_a_warning_and_the_next_still_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        fed, transport = await read_all([b"Starting server...\n", b"[1,2]\n", b'{"jsonrpc":"2.0","method":"n"}\n'])
    assert fed == [{"jsonrpc": "2.0", "method": "n"}]
    assert "not JSON-RPC" in caplog.text
    assert transport.broken_reason == "stdout closed"


async def test_a_line_over_the_limit_breaks_the_connection_and_the_rest_is_drained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stdio_client, "MAX_LINE", 64)
    big = b'{"jsonrpc":"2.0","method":"n","params":{"x":"' + b"a" * 100 + b'"}}\n'
    # A pipe delivers a long line in several reads: the limit bounds what is held waiting for its end.
    pieces = [big[i : i + 16] for i in range(0, len(big), 16)]
    fed, transport = await read_all([*pieces, b'{"jsonrpc":"2.0","method":"after"}\n'])
    assert fed == []
    assert transport.broken.is_set() and transport.broken_reason == "a stdout line exceeded 64 bytes"


async def test_stdout_ending_breaks_the_transport_saying_how_the_child_exited() -> None:
    _, transport = await read_all([], returncode=3)
    assert transport.broken.is_set() and transport.broken_reason == "process exited with status 3"


async def test_messages_are_written_to_stdin_one_per_line() -> None:
    process = FakeProcess()
    transport = StdioTransport("up", process)  # type: ignore[arg-type]
    await transport.send({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    process.close()
    assert process.stdin_sent == [b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n']


async def test_a_closed_stdin_is_an_upstream_error_naming_the_upstream() -> None:
    process = FakeProcess()

    async def closed(data: bytes) -> None:
        raise anyio.BrokenResourceError

    process.send = closed  # type: ignore[method-assign]
    transport = StdioTransport("up", process)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError, match="upstream 'up' is gone"):
        await transport.send({"jsonrpc": "2.0", "method": "n"})
    process.close()
