"""One upstream's traffic cannot starve another's (issue 12, item 4), with real processes:
while one HTTP upstream floods a call with notifications, calls to a healthy upstream keep
being answered, and the flooded call loses nothing it must not (its answer, and its last
progress before the answer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from ..support import GatewayProcess, http_upstream, write_config
from .faults import call_body, call_headers, fault_upstream

pytestmark = pytest.mark.anyio

HEALTHY_CALLS = 30


async def _flooded_call(http: httpx2.AsyncClient, url: str, started: anyio.Event, seen: list[Any]) -> None:
    """Calls the flood tool and records each progress value, then the answer."""
    body = call_body(1, "flood__flood", {}, progressToken="mine")
    headers = call_headers("flood__flood", accept="application/json, text/event-stream")
    async with http.stream("POST", url, content=body, headers=headers) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("method") == "notifications/progress":
                assert message["params"]["progressToken"] == "mine"
                seen.append(message["params"]["progress"])
                started.set()
            elif "id" in message:
                seen.append(message)
                return


async def test_a_healthy_upstream_keeps_answering_while_another_floods_its_call_with_notifications(
    tmp_path: Path,
) -> None:
    async with fault_upstream() as flooding, fault_upstream() as healthy:
        config = write_config(tmp_path, {"flood": http_upstream(flooding), "ok": http_upstream(healthy)})
        gateway = GatewayProcess(config)
        await gateway.start()
        try:
            async with httpx2.AsyncClient(timeout=120) as http, anyio.create_task_group() as tg:
                started, seen = anyio.Event(), []
                tg.start_soon(_flooded_call, http, gateway.url, started, seen)
                with anyio.fail_after(60):
                    await started.wait()

                # The flood runs until told to stop: every one of these is answered meanwhile.
                with anyio.fail_after(60):
                    for i in range(HEALTHY_CALLS):
                        response = await http.post(
                            gateway.url,
                            content=call_body(100 + i, "ok__echo", {"text": f"healthy {i}"}),
                            headers=call_headers("ok__echo"),
                        )
                        answer = response.json()
                        assert "result" in answer, answer
                        assert answer["result"]["content"][0]["text"] == f"healthy {i}"
                assert not seen or not isinstance(seen[-1], dict), "the flood ended before the healthy calls"

                stop = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "stop_flood"}}
                await http.post(flooding, json=stop, headers={"accept": "application/json, text/event-stream"})
                with anyio.fail_after(60):
                    while not seen or not isinstance(seen[-1], dict):
                        await anyio.sleep(0.05)
            answer, progress = seen[-1], seen[:-1]
            sent = int(answer["result"]["content"][0]["text"].split()[1])
            # Progress may be coalesced past the rate, never reordered, and the last one
            # (the upstream's final count) arrives before the answer.
            assert progress == sorted(progress) and progress[-1] == sent + 1
        finally:
            gateway.stop()
