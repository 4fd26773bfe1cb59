"""Review findings on the hot paths (splicing of large results)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_gateway.proxy import payload
from mcp_gateway.transport.replay import GET_STREAM, Replay, ReplayLimits

from .fakes import ScriptedServer, answer_of, hotpath, in_session, initialize, rpc

BIG = "x" * (payload.SPLICE_AT + 1000)


def _scan(body: bytes, chunk: int = 65536) -> payload.Scan:
    scan = payload.Scan()
    for at in range(0, len(body), chunk):
        scan.feed(body[at : at + chunk])
    return scan


def _relayed(body: bytes, client_id: Any = "client-id") -> bytes | None:
    raw = payload.splice(_scan(body), 0, 7)
    if raw is None:
        return None
    return b"".join(bytes(piece) for piece in payload.response_pieces(client_id, raw))


@pytest.mark.parametrize(
    "tail",
    [
        b'"content":[]},"id":"other-request","x":{"a":1}}}',  # a second top-level id (last one wins)
        b'"content":[]},"error":{"code":1,"message":"m"},"x":{"a":1}}}',  # result and error both
        b'"content":[]}}{"jsonrpc":"2.0","id":"other-request","result":{"a":{}}}',  # a second message
    ],
    ids=["duplicate id", "smuggled error", "second message"],
)
def test_a_large_result_that_closes_itself_early_is_parsed_not_spliced(tail: bytes) -> None:
    body = b'{"jsonrpc":"2.0","id":7,"result":{"big":"' + BIG.encode() + b'",' + tail
    assert _relayed(body) is None


@pytest.mark.parametrize(
    "result",
    [
        '{"content":[{"type":"\\u0072esource_link","uri":"file:///a","name":"a"},{"type":"text","text":"%s"}]}',
        '{"\\u0069sError":true,"content":[{"type":"text","text":"%s"}]}',
        '{"r\\u0065sultType":"task","taskId":"t","content":[{"type":"text","text":"%s"}]}',
    ],
    ids=["escaped resource_link", "escaped isError", "escaped resultType"],
)
def test_a_large_result_hiding_a_watched_name_behind_escapes_is_parsed_not_spliced(result: str) -> None:
    body = b'{"jsonrpc":"2.0","id":7,"result":' + (result % BIG).encode() + b"}"
    json.loads(body)  # valid JSON whose parse says what the scan did not see
    assert _relayed(body) is None


def test_a_large_result_with_non_ascii_escapes_and_nested_objects_is_still_spliced() -> None:
    result = {
        "content": [{"type": "text", "text": 'caf\u00e9 \u4e2d <a> \\ " } ] { [ ' + BIG}],
        "structuredContent": {"rows": [[1, {"a": [2, 3]}], {}, []]},
        "isError": False,
    }
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "result": result}, separators=(",", ":")).encode()
    relayed = _relayed(body)
    assert relayed is not None
    assert json.loads(relayed) == {"jsonrpc": "2.0", "id": "client-id", "result": result}


def test_one_principal_holding_answers_cannot_take_the_whole_budget_from_another() -> None:
    budget = payload.Budget(limit=100, per_response=40)
    greedy = [payload.Lease(budget, owner="greedy") for _ in range(10)]
    refused = 0
    for lease in greedy:  # many calls whose answers the client never reads
        try:
            lease.grow(20, "up")
        except payload.ResponseRefused:
            refused += 1
    assert refused > 0
    other = payload.Lease(budget, owner="other")
    other.grow(40, "up")  # still served
    for lease in [*greedy, other]:
        lease.release()
    assert budget.in_use == 0 and budget.by_owner == {}


async def _task_unasked(arguments: dict[str, Any], peer: Any) -> dict[str, Any]:
    return {"resultType": "task", "taskId": f"up-{arguments.get('n', 0)}", "status": "working"}


@pytest.mark.anyio
async def test_a_task_the_client_did_not_ask_for_is_not_taken_over_past_the_principals_task_limit() -> None:
    servers = {"files": ScriptedServer(tools={"sneaky": _task_unasked})}
    async with hotpath(servers) as gw, gw.client() as http:
        session = await initialize(http)
        for n in range(3):
            call = rpc("tools/call", {"name": "files__sneaky", "arguments": {"n": n}}, id=n + 1)
            answer = answer_of(await http.post("/mcp", json=call, headers=in_session(session)))
            assert "did not ask for" in answer["error"]["message"], answer
        # No place was held for these calls (the client asked for no task): the registry,
        # bounded by max_tasks_per_principal only through those places, took none of them.
        assert len(gw.router.tasks) == 0


def test_the_newest_large_event_of_many_sessions_is_kept_only_within_the_principals_share() -> None:
    budget = payload.Budget(limit=40_000, per_response=10_000)  # a principal's share: 20 000 bytes
    limits = ReplayLimits(events=100, bytes=1000)
    large = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "x" * 8000}}
    sessions = [Replay(limits, "greedy", budget) for _ in range(10)]
    for replay in sessions:
        replay.record(GET_STREAM, large)  # written to the client either way
    kept = sum(len(chunk) for replay in sessions for _, chunk in replay.after(GET_STREAM, -1))
    assert kept <= 20_000 + 10 * limits.bytes, kept  # not 10 large events outside every bound
    other = Replay(limits, "other", budget)
    other.record(GET_STREAM, large)
    assert len(other.after(GET_STREAM, -1)) == 1  # another principal's sessions still keep theirs
    for replay in [*sessions, other]:
        replay.close()
    assert budget.in_use == 0 and budget.by_owner == {}
