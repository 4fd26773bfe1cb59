"""Resumable SSE streams of handshake-era sessions (2025-11-25, SEP-1699), in process: the
priming event, Last-Event-ID replay of a POST stream and of the GET stream, the gateway
letting go of a long POST stream, isolation between sessions, and the per-session bounds."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from mcp_gateway.policy_model import KillSwitch
from mcp_gateway.transport import replay as replay_module
from mcp_gateway.transport.http import HttpOptions
from mcp_gateway.transport.replay import GET_STREAM, Replay, ReplayLimits

from .fakes import WAIT, Peer, ScriptedServer, events_of, hotpath, in_session, initialize, rpc, streamed, text

pytestmark = pytest.mark.anyio


def gated_server() -> tuple[ScriptedServer, anyio.Event]:
    """An upstream whose tool `gated` logs once, then answers "done" when the event is set."""
    gate = anyio.Event()

    async def gated(arguments: dict[str, Any], peer: Peer) -> dict[str, Any]:
        await peer.notify("notifications/message", {"level": "info", "data": "started"})
        await gate.wait()
        return text("done")

    return ScriptedServer({"gated": gated}, attributed=True), gate


def last_id(body: str) -> str:
    return [event["id"] for event in events_of(body) if "id" in event][-1]


async def test_a_handshake_post_stream_opens_with_a_priming_event_with_an_id_and_a_retry() -> None:
    async with hotpath() as gw, gw.client() as http:
        session_id = await initialize(http)
        call = rpc("tools/call", {"name": "files__echo", "arguments": {"text": "hi"}}, 2)
        response = await http.post("/mcp", json=call, headers=in_session(session_id))
    priming, *rest = events_of(response.text)
    assert priming["id"] and priming["retry"] == "1000" and priming.get("data", "") == ""
    assert rest[-1]["id"] != priming["id"]
    assert json.loads(rest[-1]["data"])["result"]["content"][0]["text"] == "hi"


async def test_a_client_that_hangs_up_a_post_stream_resumes_it_with_last_event_id_and_gets_the_answer() -> None:
    server, gate = gated_server()
    async with hotpath({"files": server}) as gw:
        session_id = await initialize(gw.client())
        call = rpc("tools/call", {"name": "files__gated", "arguments": {}}, 3)
        async with streamed(gw.endpoint, "POST", in_session(session_id), call) as response:
            await response.until(lambda r: bool(r.events()))  # the log event: the call is running
            seen = last_id(response.text)
            response.hang_up.set()
            resume = {**in_session(session_id), "last-event-id": seen}
            async with streamed(gw.endpoint, "GET", resume) as resumed:
                gate.set()
                await resumed.until(lambda r: r.ended)
        assert resumed.status == 200 and resumed.events()[-1]["result"]["content"][0]["text"] == "done"
        assert not server.cancelled, "hanging up a handshake-era stream is not a cancellation"


async def test_past_sse_poll_after_the_gateway_ends_the_post_stream_and_the_rest_is_replayed() -> None:
    server, gate = gated_server()
    options = HttpOptions(replay=ReplayLimits(poll_after=0.01))
    async with hotpath({"files": server}, options=options) as gw:
        session_id = await initialize(gw.client())
        call = rpc("tools/call", {"name": "files__gated", "arguments": {}}, 4)
        async with streamed(gw.endpoint, "POST", in_session(session_id), call) as response:
            await response.until(lambda r: r.ended)
            assert all("result" not in event for event in response.events())
            gate.set()
        resume = {**in_session(session_id), "last-event-id": last_id(response.text)}
        async with streamed(gw.endpoint, "GET", resume) as resumed:
            await resumed.until(lambda r: r.ended)
        assert resumed.events()[-1]["result"]["content"][0]["text"] == "done"


async def test_a_last_event_id_of_another_session_replays_nothing() -> None:
    async with hotpath() as gw, gw.client() as http:
        theirs = await initialize(http)
        call = rpc("tools/call", {"name": "files__echo", "arguments": {"text": "secret"}}, 5)
        answered = await http.post("/mcp", json=call, headers=in_session(theirs))
        mine = await initialize(http)
        resume = {**in_session(mine), "last-event-id": events_of(answered.text)[0]["id"]}
        async with streamed(gw.endpoint, "GET", resume) as stream:
            await stream.until(lambda r: ": stream open" in r.text and "retry:" in r.text)
        assert stream.status == 200 and stream.events() == [] and "secret" not in stream.text


async def test_what_the_get_stream_would_have_carried_while_closed_is_replayed_on_resume() -> None:
    async with hotpath() as gw:
        session_id = await initialize(gw.client())
        async with streamed(gw.endpoint, "GET", in_session(session_id)) as stream:
            await stream.until(lambda r: "retry:" in r.text)
            seen = last_id(stream.text)
        await gw.router.policy_changed()  # tells every session to list again, on its GET stream
        resume = {**in_session(session_id), "last-event-id": seen}
        async with streamed(gw.endpoint, "GET", resume) as resumed:
            await resumed.until(lambda r: bool(r.events()))
        assert resumed.events()[0]["method"] == "notifications/tools/list_changed"


def message(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "x" * n}}


async def test_a_session_keeps_at_most_its_event_and_byte_caps_and_an_evicted_id_replays_nothing() -> None:
    replay = Replay(ReplayLimits(events=3, bytes=10_000))
    ids = [events_of(replay.record(GET_STREAM, message(10)).decode())[0]["id"] for _ in range(5)]
    assert replay.locate(ids[0]) is None and replay.locate(ids[1]) is None
    assert len(replay.after(GET_STREAM, -1)) == 3
    small = Replay(ReplayLimits(events=100, bytes=1000))
    for _ in range(20):
        small.record(GET_STREAM, message(100))
    assert sum(len(chunk) for _, chunk in small.after(GET_STREAM, -1)) <= 1000
    large = small.record(GET_STREAM, message(5000))
    assert [chunk for _, chunk in small.after(GET_STREAM, -1)] == [large], "the newest event stays, whatever its size"


async def test_events_older_than_the_time_cap_are_not_replayed(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(replay_module.time, "monotonic", lambda: now[0])
    replay = Replay(ReplayLimits(seconds=60))
    old = events_of(replay.record(GET_STREAM, message(1)).decode())[0]["id"]
    now[0] += 61
    assert replay.locate(old) is None


async def test_a_kill_switch_ends_a_call_whose_stream_was_let_go_and_the_resume_carries_the_refusal() -> None:
    server, _ = gated_server()
    options = HttpOptions(replay=ReplayLimits(poll_after=0.01))
    async with hotpath({"files": server}, options=options) as gw:
        session_id = await initialize(gw.client())
        call = rpc("tools/call", {"name": "files__gated", "arguments": {}}, 6)
        async with streamed(gw.endpoint, "POST", in_session(session_id), call) as response:
            await response.until(lambda r: r.ended)  # let go: the call still runs
            switch = KillSwitch("ks1", "tool", "files/gated", "incident", "ops", 0.0)
            assert gw.governance.inflight.kill([switch]) == 1
        resume = {**in_session(session_id), "last-event-id": last_id(response.text)}
        async with streamed(gw.endpoint, "GET", resume) as resumed:
            await resumed.until(lambda r: r.ended)
        assert resumed.events()[-1]["error"]["data"]["kill_switch_id"] == "ks1"
        with anyio.fail_after(WAIT):
            while not [r for r in gw.audit.rows if r["kind"] != "decision"]:
                await anyio.sleep(0.01)
        assert [r["outcome"] for r in gw.audit.rows if r["kind"] != "decision"] == ["killed"]


async def test_a_session_leaves_at_most_its_detached_cap_of_calls_running_after_hang_ups() -> None:
    """Hanging up does not cancel at handshake revisions, so what a session may leave running
    unattended is bounded: past the cap a hang-up cancels its call, as before resumability."""
    server, gate = gated_server()
    options = HttpOptions(replay=ReplayLimits(detached=2))
    async with hotpath({"files": server}, options=options) as gw, AsyncExitStack() as stack:
        session_id = await initialize(gw.client())
        for n in range(3):
            call = rpc("tools/call", {"name": "files__gated", "arguments": {}}, 10 + n)
            response = await stack.enter_async_context(streamed(gw.endpoint, "POST", in_session(session_id), call))
            await response.until(lambda r: bool(r.events()))
            response.hang_up.set()
            if n < 2:
                await anyio.sleep(0.2)  # a cancellation would reach the upstream by now
                assert not server.cancelled, f"call {n + 1} is within the cap: it runs on"
        with anyio.fail_after(WAIT):
            while not server.cancelled:
                await anyio.sleep(0.01)
        assert len(server.cancelled) == 1, "only the call past the cap is cancelled"
        gate.set()  # the two detached calls answer, into the session's replay


async def test_ending_a_session_cancels_the_calls_its_client_left_running() -> None:
    server, _ = gated_server()
    async with hotpath({"files": server}) as gw, gw.client() as http:
        session_id = await initialize(http)
        call = rpc("tools/call", {"name": "files__gated", "arguments": {}}, 20)
        async with streamed(gw.endpoint, "POST", in_session(session_id), call) as response:
            await response.until(lambda r: bool(r.events()))
            response.hang_up.set()
            await anyio.sleep(0.2)
            assert not server.cancelled, "a hang-up leaves the call running for a resume"
            assert (await http.delete("/mcp", headers=in_session(session_id))).status_code == 200
            with anyio.fail_after(WAIT):
                while not server.cancelled:
                    await anyio.sleep(0.01)
