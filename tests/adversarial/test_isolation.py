"""Isolation of failure, in process: code run for one client (a listener, a sink) handed an
upstream's notification can neither fail nor stall that upstream connection's reader
(proxy/rpc.py is the boundary)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mcp_gateway import jsonrpc
from mcp_gateway.jsonrpc import Message, RequestId
from mcp_gateway.proxy.rpc import RpcConnection

pytestmark = pytest.mark.anyio


class _Wire:
    """A transport that keeps what is sent; the test plays the upstream."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.arrived = anyio.Event()

    async def send(self, message: Message, headers: dict[str, str] | None = None) -> None:
        self.sent.append(message)
        self.arrived.set()

    def abandon(self, request_id: RequestId) -> bool:
        return False


class _BrokenSink:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls = 0

    async def notify(self, message: Message) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        await anyio.sleep_forever()  # a client that never reads

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not asked")


async def test_a_notification_whose_handling_raises_does_not_fail_the_connections_reader() -> None:
    async def broken(message: Message) -> None:
        raise TypeError("'int' object is not iterable")  # the listener

    conn = RpcConnection("up", broken)
    for _ in range(3):
        await conn.feed(jsonrpc.notification("notifications/resources/updated", {"uri": "test://x"}))
    assert not conn.closed.is_set()


@pytest.mark.parametrize("sink", [_BrokenSink(RuntimeError("a broken sink")), _BrokenSink()], ids=["raises", "stalls"])
async def test_a_calls_sink_that_raises_or_stalls_does_not_hold_the_reader(sink: _BrokenSink) -> None:
    async def ignore(message: Message) -> None:
        return None

    conn = RpcConnection("up", ignore)
    wire = _Wire()
    async with anyio.create_task_group() as tg:
        conn.bind(wire, tg)
        outcome: dict[str, Any] = {}

        async def call() -> None:
            outcome["result"] = await conn.request("tools/call", {"_meta": {"progressToken": "p"}}, sink=sink)

        tg.start_soon(call)
        await wire.arrived.wait()
        request = wire.sent[0]
        token = request["params"]["_meta"]["progressToken"]
        with anyio.fail_after(10):  # the dispatch deadline bounds a stalled sink
            await conn.feed(jsonrpc.notification("notifications/progress", {"progressToken": token, "progress": 1}))
            await conn.feed(jsonrpc.result(request["id"], {"content": []}))
    assert sink.calls == 1 and outcome["result"] == {"content": []}
