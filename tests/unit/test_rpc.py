"""`RpcConnection` driven by a fake transport: the test plays the upstream, reading what the
connection sent and feeding it what an upstream would answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from mcp_gateway.errors import UPSTREAM_UNAVAILABLE, GatewayError, RpcError, UpstreamError, UpstreamTimeout
from mcp_gateway.jsonrpc import Message, RequestId
from mcp_gateway.protocol import INTERNAL_ERROR, METHOD_NOT_FOUND
from mcp_gateway.proxy import rpc
from mcp_gateway.proxy.rpc import RpcConnection

from .fakes import WAIT

pytestmark = pytest.mark.anyio


class FakeTransport:
    """Keeps what the connection sends; the test reads it with `next`."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.abandoned: list[RequestId] = []
        self._arrived = anyio.Event()

    async def send(self, message: Message, headers: dict[str, str] | None = None) -> None:
        self.sent.append(message)
        self._arrived.set()

    def abandon(self, request_id: RequestId) -> bool:
        self.abandoned.append(request_id)
        return True

    async def next(self, where: Any = lambda m: True) -> Message:
        """The first message sent that `where` accepts, waiting for it."""
        with anyio.fail_after(WAIT):
            while True:
                for message in self.sent:
                    if where(message):
                        self.sent.remove(message)
                        return message
                self._arrived = anyio.Event()
                await self._arrived.wait()


class Sink:
    """A call's side traffic, as the test sees it."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.notes: list[Message] = []
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.answer = answer or {"ok": True}
        self.hold = False
        self.asking = anyio.Event()
        self.gave_up = anyio.Event()

    async def notify(self, message: Message) -> None:
        self.notes.append(message)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.asked.append((method, params))
        self.asking.set()
        if self.hold:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.gave_up.set()
                raise
        return self.answer


class Connected:
    def __init__(self, conn: RpcConnection, transport: FakeTransport, tg: Any, unowned: list[Message]) -> None:
        self.conn, self.transport, self.tg, self.unowned = conn, transport, tg, unowned

    def call(self, method: str = "tools/call", params: dict[str, Any] | None = None, **kw: Any) -> asyncio.Task[Any]:
        """A request from a caller task of its own; its outcome is the task's."""
        return asyncio.get_running_loop().create_task(self.conn.request(method, params or {}, **kw))

    async def sent_request(self, method: str = "tools/call") -> Message:
        return await self.transport.next(lambda m: m.get("method") == method and "id" in m)


@asynccontextmanager
async def connected() -> AsyncIterator[Connected]:
    unowned: list[Message] = []

    async def on_notification(message: Message) -> None:
        unowned.append(message)

    async with anyio.create_task_group() as tg:
        conn = RpcConnection("up", on_notification)
        transport = FakeTransport()
        conn.bind(transport, tg)
        yield Connected(conn, transport, tg, unowned)
        conn.close("test over")
        tg.cancel_scope.cancel()


async def outcome(task: asyncio.Task[Any]) -> Any:
    with anyio.fail_after(WAIT):
        return await task


async def test_answers_reach_their_callers_by_id_whatever_order_they_come_in() -> None:
    async with connected() as c:
        first, second = c.call(params={"n": 1}), c.call(params={"n": 2})
        a, b = await c.sent_request(), await c.sent_request()
        assert a["id"] != b["id"]
        await c.conn.feed({"jsonrpc": "2.0", "id": b["id"], "result": {"n": b["params"]["n"]}})
        await c.conn.feed({"jsonrpc": "2.0", "id": a["id"], "result": {"n": a["params"]["n"]}})
        assert await outcome(first) == {"n": 1} and await outcome(second) == {"n": 2}


async def test_an_error_answer_raises_the_upstreams_error_as_it_sent_it() -> None:
    async with connected() as c:
        task = c.call()
        sent = await c.sent_request()
        error = {"code": -32602, "message": "bad arguments", "data": {"field": "x"}}
        await c.conn.feed({"jsonrpc": "2.0", "id": sent["id"], "error": error})
        with pytest.raises(RpcError) as caught:
            await outcome(task)
        assert caught.value.to_error() == error


async def test_a_result_that_is_not_an_object_is_an_upstream_error() -> None:
    async with connected() as c:
        task = c.call()
        sent = await c.sent_request()
        await c.conn.feed({"jsonrpc": "2.0", "id": sent["id"], "result": [1, 2]})
        with pytest.raises(UpstreamError, match="not an object"):
            await outcome(task)


async def test_an_answer_to_no_pending_request_is_dropped() -> None:
    async with connected() as c:
        task = c.call()
        sent = await c.sent_request()
        await c.conn.feed({"jsonrpc": "2.0", "id": 999, "result": {"stray": True}})
        assert not task.done()
        await c.conn.feed({"jsonrpc": "2.0", "id": sent["id"], "result": {"mine": True}})
        assert await outcome(task) == {"mine": True}


async def test_two_callers_with_the_same_progress_token_each_get_only_their_own_progress() -> None:
    async with connected() as c:
        sink_a, sink_b = Sink(), Sink()
        meta = {"_meta": {"progressToken": "tok"}}
        task_a, task_b = c.call(params=meta, sink=sink_a), c.call(params=meta, sink=sink_b)
        a, b = await c.sent_request(), await c.sent_request()
        token_a, token_b = a["params"]["_meta"]["progressToken"], b["params"]["_meta"]["progressToken"]
        assert token_a != token_b
        progress = {"jsonrpc": "2.0", "method": "notifications/progress"}
        await c.conn.feed({**progress, "params": {"progressToken": token_b, "progress": 1}})
        assert sink_a.notes == []
        assert sink_b.notes == [{**progress, "params": {"progressToken": "tok", "progress": 1}}]
        for sent in (a, b):
            await c.conn.feed({"jsonrpc": "2.0", "id": sent["id"], "result": {}})
        await outcome(task_a), await outcome(task_b)


async def test_progress_after_the_call_has_ended_goes_nowhere() -> None:
    async with connected() as c:
        sink = Sink()
        task = c.call(params={"_meta": {"progressToken": 5}}, sink=sink)
        sent = await c.sent_request()
        await c.conn.feed({"jsonrpc": "2.0", "id": sent["id"], "result": {}})
        await outcome(task)
        token = sent["params"]["_meta"]["progressToken"]
        await c.conn.feed({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token}})
        assert sink.notes == [] and c.unowned == []


async def test_a_caller_that_stops_waiting_tells_the_upstream_which_request_to_cancel() -> None:
    async with connected() as c:
        task = c.call()
        sent = await c.sent_request()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outcome(task)
        cancelled = await c.transport.next(lambda m: m.get("method") == "notifications/cancelled")
        assert cancelled["params"] == {"requestId": sent["id"], "reason": "cancelled by the client"}
        assert c.transport.abandoned == [sent["id"]]


async def test_a_request_past_its_deadline_fails_as_a_timeout_and_is_cancelled_upstream() -> None:
    async with connected() as c:
        task = c.call(timeout=0.01)
        sent = await c.sent_request()
        with pytest.raises(UpstreamTimeout, match="did not answer tools/call"):
            await outcome(task)
        cancelled = await c.transport.next(lambda m: m.get("method") == "notifications/cancelled")
        assert cancelled["params"] == {"requestId": sent["id"], "reason": "timeout"}


async def test_a_peer_that_closes_fails_every_pending_request_with_the_reason() -> None:
    async with connected() as c:
        tasks = [c.call(), c.call()]
        await c.sent_request(), await c.sent_request()
        c.conn.close("process exited with status 1")
        for task in tasks:
            # The caller sees the error a client will be answered with: the upstream is unavailable.
            with pytest.raises(GatewayError, match="disconnected: process exited with status 1") as caught:
                await outcome(task)
            assert caught.value.code == UPSTREAM_UNAVAILABLE
        assert c.conn.in_flight == 0


async def test_a_closed_connection_refuses_new_requests_at_once() -> None:
    async with connected() as c:
        c.conn.close("gone")
        with pytest.raises(UpstreamError, match="not connected"):
            await c.conn.request("tools/call", {})
        assert c.transport.sent == []


async def test_the_gateway_answers_an_upstreams_ping_itself() -> None:
    async with connected() as c:
        await c.conn.feed({"jsonrpc": "2.0", "id": "p1", "method": "ping"})
        assert await c.transport.next() == {"jsonrpc": "2.0", "id": "p1", "result": {}}


async def test_an_upstream_request_during_the_only_call_in_flight_is_asked_of_that_calls_client() -> None:
    async with connected() as c:
        sink = Sink({"action": "accept"})
        task = c.call(sink=sink)
        sent = await c.sent_request()
        await c.conn.feed({"jsonrpc": "2.0", "id": "q", "method": "elicitation/create", "params": {"message": "?"}})
        assert await c.transport.next(lambda m: m.get("id") == "q") == {
            "jsonrpc": "2.0",
            "id": "q",
            "result": {"action": "accept"},
        }
        assert sink.asked == [("elicitation/create", {"message": "?"})]
        await c.conn.feed({"jsonrpc": "2.0", "id": sent["id"], "result": {}})
        await outcome(task)


async def test_an_upstream_request_that_no_call_can_own_is_refused_rather_than_guessed() -> None:
    async with connected() as c:
        await c.conn.feed({"jsonrpc": "2.0", "id": "lonely", "method": "sampling/createMessage", "params": {}})
        assert (await c.transport.next(lambda m: m.get("id") == "lonely"))["error"]["code"] == METHOD_NOT_FOUND
        sinks = [Sink(), Sink()]
        tasks = [c.call(sink=s) for s in sinks]
        sent = [await c.sent_request(), await c.sent_request()]
        await c.conn.feed({"jsonrpc": "2.0", "id": "two", "method": "sampling/createMessage", "params": {}})
        assert (await c.transport.next(lambda m: m.get("id") == "two"))["error"]["code"] == INTERNAL_ERROR
        assert all(s.asked == [] for s in sinks)
        for message in sent:
            await c.conn.feed({"jsonrpc": "2.0", "id": message["id"], "result": {}})
        for task in tasks:
            await outcome(task)


async def test_the_stream_a_message_came_on_names_its_call_among_several() -> None:
    async with connected() as c:
        sinks = [Sink(), Sink()]
        tasks = [c.call(sink=s) for s in sinks]
        sent = [await c.sent_request(), await c.sent_request()]
        log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
        await c.conn.feed(log, related=sent[1]["id"])
        assert sinks[0].notes == [] and sinks[1].notes == [log]
        for message in sent:
            await c.conn.feed({"jsonrpc": "2.0", "id": message["id"], "result": {}})
        for task in tasks:
            await outcome(task)


async def test_a_log_message_with_several_calls_in_flight_goes_to_the_connection_not_a_guessed_call() -> None:
    async with connected() as c:
        sinks = [Sink(), Sink()]
        tasks = [c.call(sink=s) for s in sinks]
        sent = [await c.sent_request(), await c.sent_request()]
        log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
        await c.conn.feed(log)
        assert sinks[0].notes == sinks[1].notes == [] and c.unowned == [log]
        for message in sent:
            await c.conn.feed({"jsonrpc": "2.0", "id": message["id"], "result": {}})
        for task in tasks:
            await outcome(task)


async def test_the_upstream_cancelling_its_own_request_stops_asking_the_client_and_sends_no_answer() -> None:
    async with connected() as c:
        sink = Sink()
        sink.hold = True
        task = c.call(sink=sink)
        sent = await c.sent_request()
        await c.conn.feed({"jsonrpc": "2.0", "id": "q", "method": "roots/list", "params": {}})
        with anyio.fail_after(WAIT):
            await sink.asking.wait()
        await c.conn.feed({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "q"}})
        with anyio.fail_after(WAIT):
            await sink.gave_up.wait()
        await c.conn.feed({"jsonrpc": "2.0", "id": sent["id"], "result": {}})
        await outcome(task)
        assert [m for m in c.transport.sent if m.get("id") == "q"] == []


async def test_a_notification_handler_that_fails_or_stalls_never_stops_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rpc, "DISPATCH_DEADLINE", 0.01)
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message["method"])
        if message["method"] == "fails":
            raise RuntimeError("a client's delivery broke")
        if message["method"] == "stalls":
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        conn, transport = RpcConnection("up", handler), FakeTransport()
        conn.bind(transport, tg)
        for method in ("fails", "stalls", "fine"):
            await conn.feed({"jsonrpc": "2.0", "method": method})
        task = asyncio.get_running_loop().create_task(conn.request("tools/call", {}))
        sent = await transport.next()
        await conn.feed({"jsonrpc": "2.0", "id": sent["id"], "result": {"still": "working"}})
        assert await outcome(task) == {"still": "working"}
        assert seen == ["fails", "stalls", "fine"]
        tg.cancel_scope.cancel()
