"""One upstream's traffic against another's latency (issue 12, item 4).

A healthy upstream is called one call at a time throughout; its latency through the
gateway is measured with no fault, while another upstream floods one call with 200,000
progress notifications, and while four clients at once get 50 MiB answers from a third
(JSON, then SSE). One run, one table:

    python bench/isolation.py [--notifications 200000] [--mib 50] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import Target, call_body, summary
from bench.procs import Gateway, Proc, create_key, free_port, wait_port, write_gateway_config

FAULT = Path(__file__).resolve().parent / "fault_upstream.py"


async def fault_upstream() -> Proc:
    port = free_port()
    proc = Proc([sys.executable, str(FAULT), "--port", str(port)], port)
    await wait_port(port)
    return proc


async def healthy_latency(session: aiohttp.ClientSession, target: Target, until: Callable[[], bool]) -> list[float]:
    headers = target.headers(name=target.tool)
    samples, i = [], 0
    while not until():
        i += 1
        started = time.perf_counter()
        async with session.post(target.url, data=call_body(i, target.tool, {"text": "ok"}), headers=headers) as r:
            body = await r.read()
        if r.status != 200 or b'"error"' in body[:200]:
            raise RuntimeError(f"healthy call failed: {body[:300]!r}")
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.005)
    return samples


async def flood(session: aiohttp.ClientSession, target: Target, count: int) -> dict[str, Any]:
    body = orjson.loads(call_body(1, "flood__flood", {"count": count}))
    body["params"]["_meta"]["progressToken"] = "bench"
    headers = target.headers(name="flood__flood")
    progress, answered = 0, False
    async with session.post(target.url, data=orjson.dumps(body), headers=headers) as response:
        async for line in response.content:
            if line.startswith(b"data:"):
                message = orjson.loads(line[5:])
                if message.get("method") == "notifications/progress":
                    progress += 1
                elif "result" in message:
                    answered = True
    return {"progress delivered": progress, "answered": answered}


async def big(session: aiohttp.ClientSession, target: Target, mib: int, sse: bool) -> int:
    headers = target.headers(name="big__big")
    if not sse:
        headers["accept"] = "application/json"
    size = 0
    async with session.post(target.url, data=call_body(2, "big__big", {"mib": mib, "sse": sse}), headers=headers) as r:
        # Counted as it comes, not joined: a 50 MiB `read()` holds this process's loop for
        # ~25 ms, and the healthy calls timed on that loop would charge it to the gateway.
        async for chunk in r.content.iter_any():
            size += len(chunk)
    return size


async def during(
    session: aiohttp.ClientSession, healthy: Target, fault: Callable[[], Awaitable[Any]], rounds: int
) -> tuple[dict[str, float], Any, float]:
    """The healthy upstream's latency while `fault` runs, `rounds` times over."""
    samples: list[float] = []
    outcome, took = None, 0.0
    for _ in range(rounds):
        task = asyncio.ensure_future(fault())
        started = time.perf_counter()
        samples += await healthy_latency(session, healthy, task.done)
        outcome, took = await task, took + time.perf_counter() - started
    return summary(samples), outcome, took


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notifications", type=int, default=200_000)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="times each fault is run (its samples pooled)")
    parser.add_argument(
        "--buffer-mib",
        type=int,
        default=256,
        help="response_buffer_bytes: room for the four answers at once (0: not set, for a gateway without it)",
    )
    args = parser.parse_args()
    upstreams = [await fault_upstream() for _ in range(3)]
    directory = Path(tempfile.mkdtemp(prefix="isolation-"))
    config = write_gateway_config(
        directory,
        {
            name: {"url": f"http://127.0.0.1:{u.port}/mcp"}
            for name, u in zip(("ok", "flood", "big"), upstreams, strict=True)
        },
        **({"response_buffer_bytes": args.buffer_mib * 2**20} if args.buffer_mib else {}),
    )
    key = await create_key(config)
    gateway = Gateway(config)
    try:
        await gateway.ready()
        healthy = Target(gateway.url, "ok__echo", key)
        rows = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            warm = time.perf_counter() + 1
            await healthy_latency(session, healthy, lambda: time.perf_counter() > warm)
            end = time.perf_counter() + args.seconds
            calm = await healthy_latency(session, healthy, lambda: time.perf_counter() > end)
            rows.append(("no fault", summary(calm), "", args.seconds))
            stats, outcome, took = await during(
                session, healthy, lambda: flood(session, healthy, args.notifications), args.rounds
            )
            rows.append((f"flood of {args.notifications:,} notifications", stats, outcome, took))
            for sse in (False, True):

                async def four(sse: bool = sse) -> list[int]:
                    return list(await asyncio.gather(*(big(session, healthy, args.mib, sse) for _ in range(4))))

                stats, sizes, took = await during(session, healthy, four, args.rounds)
                label = f"4 x {args.mib} MiB answers ({'SSE' if sse else 'JSON'})"
                rows.append((label, stats, f"{sum(sizes) / 2**20:.0f} MiB received", took))
        print(f"healthy upstream latency, ms (gateway RSS after: {gateway.rss_mb():.0f} MB)")
        print(f"{'during':<40} {'calls':>6} {'p50':>8} {'p99':>8} {'max':>8} {'fault took':>10}  fault outcome (last)")
        for label, stats, outcome, took in rows:
            print(
                f"{label:<40} {stats['n']:>6} {stats['p50']:>8.2f} {stats['p99']:>8.2f} {stats['max']:>8.2f}"
                f" {took:>9.1f}s  {outcome}"
            )
    finally:
        gateway.stop()
        for upstream in upstreams:
            upstream.stop()


if __name__ == "__main__":
    asyncio.run(main())
