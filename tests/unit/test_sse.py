"""Server-sent events both ways: how the gateway writes an answer (JSON, or an SSE stream once
something has to stream) and how it reads an upstream's event stream (data, id, retry)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from mcp_gateway.errors import ProtocolError
from mcp_gateway.jsonrpc import Message
from mcp_gateway.protocol import INTERNAL_ERROR, INVALID_PARAMS
from mcp_gateway.proxy.http_client import Event, events
from mcp_gateway.proxy.payload import Lease
from mcp_gateway.transport import sse

from .fakes import WAIT, events_of

pytestmark = pytest.mark.anyio

NOTE = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}


class Exchange:
    """One HTTP exchange as the ASGI app sees it: what it sent, and a client that may hang up."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def body(self) -> str:
        return b"".join(m.get("body", b"") for m in self.sent[1:]).decode()

    @property
    def ended(self) -> bool:
        return len(self.sent) > 1 and not self.sent[-1].get("more_body", False)


StreamedHandler = Callable[[Callable[[Message], Awaitable[None]]], Awaitable[dict[str, Any]]]


async def answer(handler: StreamedHandler, exchange: Exchange | None = None, **options: Any) -> Exchange:
    exchange = exchange or Exchange()
    options.setdefault("status_for", {})
    options.setdefault("streaming", True)
    with anyio.fail_after(WAIT):
        await sse.answer(exchange.receive, exchange.send, 7, handler, **options)
    return exchange


async def test_an_answer_with_nothing_before_it_is_plain_json_with_its_length() -> None:
    async def handler(emit: Any) -> dict[str, Any]:
        return {"ok": True}

    exchange = await answer(handler)
    assert exchange.status == 200 and exchange.headers["content-type"] == "application/json"
    assert int(exchange.headers["content-length"]) == len(exchange.body)
    assert json.loads(exchange.body) == {"jsonrpc": "2.0", "id": 7, "result": {"ok": True}}


async def test_a_message_before_the_answer_turns_the_response_into_an_event_stream_ending_with_the_answer() -> None:
    async def handler(emit: Any) -> dict[str, Any]:
        await emit(NOTE)
        return {"ok": True}

    exchange = await answer(handler)
    assert exchange.status == 200 and exchange.headers["content-type"] == "text/event-stream"
    assert [json.loads(e["data"]) for e in events_of(exchange.body)] == [
        NOTE,
        {"jsonrpc": "2.0", "id": 7, "result": {"ok": True}},
    ]
    assert all(e["event"] == "message" for e in events_of(exchange.body)) and exchange.ended


async def test_a_client_that_accepts_no_event_stream_gets_json_and_loses_the_messages_before_it() -> None:
    async def handler(emit: Any) -> dict[str, Any]:
        await emit(NOTE)
        return {"ok": True}

    exchange = await answer(handler, streaming=False)
    assert exchange.headers["content-type"] == "application/json"
    assert json.loads(exchange.body)["result"] == {"ok": True}


async def test_prefer_sse_sends_even_a_bare_answer_as_a_one_event_stream() -> None:
    async def handler(emit: Any) -> dict[str, Any]:
        return {}

    exchange = await answer(handler, prefer_sse=True)
    assert exchange.headers["content-type"] == "text/event-stream"
    assert [json.loads(e["data"])["id"] for e in events_of(exchange.body)] == [7]


async def test_an_error_is_answered_with_the_status_its_code_maps_to() -> None:
    async def handler(emit: Any) -> dict[str, Any]:
        raise ProtocolError(INVALID_PARAMS, "bad name")

    exchange = await answer(handler, status_for={INVALID_PARAMS: 400})
    assert exchange.status == 400
    assert json.loads(exchange.body)["error"] == {"code": INVALID_PARAMS, "message": "bad name"}
    assert (await answer(handler)).status == 200  # unmapped: a JSON-RPC error in a 200


async def test_a_handler_that_crashes_is_answered_with_an_internal_error_that_leaks_nothing() -> None:
    async def handler(emit: Any) -> dict[str, Any]:
        raise KeyError("secret detail")

    exchange = await answer(handler)
    assert json.loads(exchange.body)["error"] == {"code": INTERNAL_ERROR, "message": "Internal error"}


async def test_a_request_the_client_cancelled_gets_no_answer() -> None:
    cancellation: list[sse.Cancellation] = []

    async def handler(emit: Any) -> dict[str, Any]:
        cancellation[0].cancel()
        await anyio.sleep_forever()
        return {}

    async def run(exchange: Exchange, emit_first: bool) -> None:
        async def maybe_emitting(emit: Any) -> dict[str, Any]:
            if emit_first:
                await emit(NOTE)
            return await handler(emit)

        cancellation[:] = [sse.Cancellation()]  # bound to this task, as the transport does
        with anyio.fail_after(WAIT):
            await sse.answer(
                exchange.receive,
                exchange.send,
                7,
                maybe_emitting,
                status_for={},
                streaming=True,
                cancellation=cancellation[0],
            )

    quiet, streaming = Exchange(), Exchange()
    await run(quiet, emit_first=False)
    assert quiet.status == 204 and quiet.body == ""
    await run(streaming, emit_first=True)
    assert [json.loads(e["data"]) for e in events_of(streaming.body)] == [NOTE] and streaming.ended


async def test_a_client_that_hangs_up_cancels_the_handler_and_nothing_more_is_written() -> None:
    stopped = anyio.Event()
    exchange = Exchange()

    async def handler(emit: Any) -> dict[str, Any]:
        exchange.gone.set()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()
        return {}

    await answer(handler, exchange)
    assert stopped.is_set() and exchange.sent == []


async def test_a_long_silent_handler_commits_to_a_stream_with_keepalive_comments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE", 0.01)
    monkeypatch.setattr(sse, "WATCH_AFTER", 0.0)
    exchange = Exchange()

    async def handler(emit: Any) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            while not exchange.sent:
                await anyio.sleep(0.01)
        return {"late": True}

    await answer(handler, exchange)
    assert exchange.headers["content-type"] == "text/event-stream"
    assert exchange.body.startswith(": keepalive\n\n")
    assert [json.loads(e["data"])["result"] for e in events_of(exchange.body)] == [{"late": True}]


def test_a_frame_is_one_data_line_whatever_line_breaks_the_message_holds() -> None:
    framed = sse.frame({"jsonrpc": "2.0", "method": "n", "params": {"text": "a\nb\rc\r\nd"}})
    assert framed.startswith(b"event: message\ndata: ") and framed.endswith(b"\n\n")
    assert framed.count(b"\n") == 3 and b"\r" not in framed
    assert json.loads(events_of(framed.decode())[0]["data"])["params"]["text"] == "a\nb\rc\r\nd"


async def test_relay_writes_each_message_as_an_event_and_ends_the_response_when_the_stream_ends() -> None:
    exchange = Exchange()
    send, receive = anyio.create_memory_object_stream[Message](4)
    sent: list[int] = []
    with send:
        send.send_nowait(NOTE)
        send.send_nowait({**NOTE, "params": {"progress": 2}})
    with anyio.fail_after(WAIT), receive:
        await sse.relay(exchange.receive, exchange.send, receive, on_sent=lambda: sent.append(1))
    chunks = [m["body"] for m in exchange.sent]
    assert [json.loads(e["data"])["params"]["progress"] for e in events_of(b"".join(chunks).decode())] == [1, 2]
    assert exchange.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert len(sent) == 2


async def test_relay_stops_without_writing_when_the_client_hangs_up() -> None:
    exchange = Exchange()
    send, receive = anyio.create_memory_object_stream[Message](4)
    exchange.gone.set()
    with anyio.fail_after(WAIT), send, receive:
        await sse.relay(exchange.receive, exchange.send, receive)
    assert exchange.sent == []


async def test_an_idle_relay_sends_keepalive_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE", 0.001)
    exchange = Exchange()

    async def hang_up_after_a_keepalive() -> dict[str, Any]:
        await exchange.gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        exchange.sent.append(message)
        exchange.gone.set()

    send_stream, receive = anyio.create_memory_object_stream[Message](4)
    with anyio.fail_after(WAIT), send_stream, receive:
        await sse.relay(hang_up_after_a_keepalive, send, receive)
    assert exchange.sent[0]["body"] == b": keepalive\n\n"


# -- reading an upstream's stream -------------------------------------------------------------


class Body:
    """A response whose body arrives in the given chunks."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = chunks

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


async def read(*chunks: bytes) -> list[Event]:
    return [event async for event in events(Body(*chunks), Lease())]  # type: ignore[arg-type]


async def test_data_lines_of_one_event_are_joined_and_comments_and_unknown_fields_are_skipped() -> None:
    assert await read(b": hello\nevent: message\ndata: a\ndata: b\nweird: x\n\n") == [Event(b"a\nb")]


async def test_crlf_line_endings_read_like_lf_even_split_between_chunks() -> None:
    assert await read(b"id: 1\r", b"\ndata: x\r\n\r", b"\n") == [Event(b"x", "1")]


async def test_a_bare_cr_ends_a_line_as_the_sse_format_says() -> None:
    assert await read(b"id: 1\rdata: a\rdata: b\r\r") == [Event(b"a\nb", "1")]


async def test_the_last_event_id_carries_over_and_retry_applies_to_its_own_event() -> None:
    assert await read(b"id: 5\nretry: 1000\ndata: a\n\ndata: b\n\n") == [Event(b"a", "5", 1000), Event(b"b", "5")]


async def test_an_event_with_an_id_or_retry_and_no_data_is_still_reported() -> None:
    assert await read(b"id: 9\nretry: 50\n\n") == [Event(b"", "9", 50)]


async def test_an_invalid_retry_or_an_id_with_nul_is_ignored() -> None:
    assert await read(b"id: 1\n\nid: a\x00b\nretry: soon\ndata: x\n\n") == [Event(b"", "1"), Event(b"x", "1")]


async def test_a_last_event_without_its_blank_line_is_still_delivered_at_the_end_of_the_body() -> None:
    assert await read(b"data: tail") == [Event(b"tail")]


async def test_only_the_first_space_after_the_colon_is_dropped() -> None:
    assert await read(b"data:no-space\ndata:  two\n\n") == [Event(b"no-space\n two")]
