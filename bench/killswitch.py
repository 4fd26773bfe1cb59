"""Kill switch timing across two replicas sharing PostgreSQL.

For each round: engage a server switch through replica A's admin API and measure, from
the moment A's answer arrives, (1) the first denial seen on A and on B by a caller that
keeps calling, and (2) the end of the calls in flight on B (they are waiting on a slow
tool). Then release it, and wait until both replicas serve again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from .load import Target, call_body, summary
from .procs import ADMIN_HEADERS


async def _first_denial(session: aiohttp.ClientSession, target: Target, since: float, stop: asyncio.Event) -> float:
    headers = target.headers(name=target.tool)
    i = 0
    while not stop.is_set():
        i += 1
        async with session.post(target.url, data=call_body(i, target.tool, {"text": "probe"}), headers=headers) as r:
            payload = await r.read()
        if b"-32050" in payload:
            return time.perf_counter() - since
    return float("nan")


async def _slow_call(session: aiohttp.ClientSession, target: Target, ended: list[float]) -> None:
    headers = target.headers(name="everything__slow")
    body = call_body(0, "everything__slow", {"seconds": 30})
    async with session.post(target.url, data=body, headers=headers) as r:
        await r.read()
    ended.append(time.perf_counter())


async def rounds(a_url: str, b_url: str, admin_a: str, key: str, count: int, in_flight: int = 20) -> dict[str, Any]:
    to_a, to_b, to_end = [], [], []
    a = Target(a_url, "everything__echo", key)
    b = Target(b_url, "everything__echo", key)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        for _ in range(count):
            ended: list[float] = []
            slow = [asyncio.create_task(_slow_call(session, b, ended)) for _ in range(in_flight)]
            await asyncio.sleep(0.5)  # let the slow calls reach the upstream
            async with session.post(
                f"{admin_a}/kill-switches",
                json={"scope": "server", "server": "everything", "reason": "bench"},
                headers=ADMIN_HEADERS,
            ) as response:
                switch = (await response.json())["id"]
                answered = time.perf_counter()
            stop = asyncio.Event()
            first_a, first_b = await asyncio.gather(
                _first_denial(session, a, answered, stop), _first_denial(session, b, answered, stop)
            )
            await asyncio.wait_for(asyncio.gather(*slow), 10)
            to_a.append(first_a)
            to_b.append(first_b)
            to_end.append(max(ended) - answered)
            async with session.post(
                f"{admin_a}/kill-switches/{switch}/release", json={"reason": "bench"}, headers=ADMIN_HEADERS
            ) as response:
                await response.read()
            for target in (a, b):  # both serve again before the next round
                while True:
                    async with session.post(
                        target.url,
                        data=call_body(1, target.tool, {"text": "x"}),
                        headers=target.headers(name=target.tool),
                    ) as r:
                        if b"-32050" not in await r.read():
                            break
                    await asyncio.sleep(0.01)
    return {
        "rounds": count,
        "calls_in_flight_per_round": in_flight,
        "first_denial_on_a_ms": summary(to_a),
        "first_denial_on_b_ms": summary(to_b),
        "in_flight_on_b_ended_ms": summary(to_end),
    }
