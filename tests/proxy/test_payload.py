"""Splicing large answers (proxy/payload.py), in process: a result is relayed unparsed only
when the bytes say everything the gateway reads of it; anything else is parsed."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mcp_gateway.proxy import payload
from mcp_gateway.proxy.rpc import RpcConnection

BIG = "x" * (payload.SPLICE_AT + 10)


def _scan(body: bytes, chunk: int = 65536) -> payload.Scan:
    scan = payload.Scan()
    for start in range(0, len(body), chunk):
        scan.feed(body[start : start + chunk])
    return scan


def _response(result: dict[str, Any], request_id: int = 7) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}, separators=(",", ":")).encode()


def test_a_large_result_is_spliced_with_its_top_level_fields_read_from_its_end() -> None:
    result = {"content": [{"type": "text", "text": BIG}], "isError": True, "resultType": "complete"}
    raw = payload.splice(_scan(_response(result)), 0, 7)
    assert raw is not None and dict(raw) == {"isError": True, "resultType": "complete"}
    relayed = b"".join(bytes(piece) for piece in payload.response_pieces("client-id", raw))
    assert json.loads(relayed) == {"jsonrpc": "2.0", "id": "client-id", "result": result}


@pytest.mark.parametrize(
    "result",
    [
        {"content": [{"type": "resource_link", "uri": "file:///a", "name": "a"}, {"type": "text", "text": BIG}]},
        {"isError": True, "content": [{"type": "text", "text": BIG}]},
        {"content": [{"type": "text", "text": BIG}], "structuredContent": {"isError": True}},
    ],
    ids=["resource link to rename", "isError not at the end", "nested isError"],
)
def test_a_result_whose_bytes_do_not_say_everything_is_parsed(result: dict[str, Any]) -> None:
    assert payload.splice(_scan(_response(result)), 0, 7) is None


def test_a_pretty_printed_answer_another_id_or_a_small_one_is_parsed() -> None:
    result = {"content": [{"type": "text", "text": BIG}]}
    pretty = json.dumps({"jsonrpc": "2.0", "id": 7, "result": result}, indent=1).encode()
    assert payload.splice(_scan(pretty), 0, 7) is None  # a line break would cut an SSE event
    assert payload.splice(_scan(_response(result, 8)), 0, 7) is None
    assert payload.splice(_scan(_response({"content": []})), 0, 7) is None


def test_a_watched_token_split_across_reads_is_still_seen() -> None:
    body = _response({"content": [{"type": "text", "text": BIG}, {"type": "resource_link", "uri": "u", "name": "u"}]})
    at = body.index(b'"resource_link"') + 4
    scan = payload.Scan()
    scan.feed(body[:at])  # large already: scanned up to here
    scan.feed(body[at:])
    assert payload.splice(scan, 0, 7) is None


@pytest.mark.parametrize("token", payload._WATCH)
def test_each_watched_token_is_seen_in_a_read_of_otherwise_bare_text(token: bytes) -> None:
    # A read with none of a token group's first byte skips that group's looks: the read
    # that holds the token holds its first byte.
    scan = payload.Scan()
    scan.feed(b"x" * payload.SPLICE_AT)
    scan.feed(b"x" * 100 + token + b"x" * 100)
    scan.feed(b"x" * 1000)
    assert scan.hits == [payload.SPLICE_AT + 100]


def test_a_lease_refuses_past_either_limit_and_gives_back_what_it_held() -> None:
    budget = payload.Budget(limit=100, per_response=60)
    first, second = payload.Lease(budget), payload.Lease(budget)
    first.grow(50, "up")
    with pytest.raises(payload.ResponseRefused, match="max_response_bytes"):
        first.grow(20, "up")
    with pytest.raises(payload.ResponseRefused, match="response_buffer_bytes"):
        second.grow(55, "up")
    second.release()
    first.release()
    assert budget.in_use == 0 and budget.refused == 2


class _Wire:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.sent.append(message)

    def abandon(self, request_id: Any) -> bool:
        return False


@pytest.mark.anyio
async def test_a_stdio_answer_is_held_on_its_callers_lease_and_refused_past_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A budget of its own: the process-wide one may hold what other in-process tests left.
    monkeypatch.setattr(payload, "BUDGET", payload.Budget(2 * payload.SPLICE_AT, payload.BUDGET.per_response))

    async def ignore(message: dict[str, Any]) -> None:
        return None

    conn, wire = RpcConnection("up", ignore), _Wire()
    outcomes: list[Any] = []
    leases: list[payload.Lease] = []

    async def call() -> None:
        leases.append(payload.open_lease())
        try:
            outcomes.append(await conn.request("tools/call", {"name": "t"}))
        except payload.ResponseRefused as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        conn.bind(wire, tg)
        tg.start_soon(call)
        tg.start_soon(call)
        while len(wire.sent) < 2:
            await anyio.lowlevel.checkpoint()
        size = payload.SPLICE_AT + 1  # two of them do not fit
        for request in wire.sent:
            await conn.feed({"jsonrpc": "2.0", "id": request["id"], "result": {"content": []}}, None, size)
    assert outcomes[0] == {"content": []} and isinstance(outcomes[1], payload.ResponseRefused)
    assert payload.BUDGET.in_use == size  # held until the first caller's answer is written
    for lease in leases:
        lease.release()
    assert payload.BUDGET.in_use == 0
