"""The upstream HTTP client's speed claim (README, Dependencies): the gateway's own HTTP/1.1
client (`proxy/http11.py`) against the libraries it would otherwise use, side by side in one
run against the same local upstream (`bench/fast_upstream.py`, uvicorn, small JSON-RPC
answers).

Clients: `http11` (the gateway's), `httpcore` (httpcore2's AsyncConnectionPool), `httpx`
(httpx2's AsyncHTTPTransport: the transport alone, no client object), `aiohttp`
(a ClientSession). Each sends the POST the gateway sends for a `tools/call` and reads the
whole answer. Two modes: one connection (one request at a time) and 32 concurrent
requests (up to 32 connections). Rounds interleave the clients so that a noisy machine
hurts them alike; requests/s is the median over rounds, latencies are pooled, and CPU is
this process's CPU time per request (the upstream runs in its own process): that last is
what the client costs the gateway.

    python bench/http_client.py [--seconds 2] [--rounds 3] [--loop uvloop|asyncio] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpcore2
import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import fast_upstream
from mcp_gateway.proxy import http11

BODY = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hello"}}},
    separators=(",", ":"),
).encode()
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": "tools/call",
    "mcp-name": "echo",
}
CONCURRENCY = 32

Call = Callable[[], Awaitable[bytes]]


async def open_client(name: str, url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """A client's one call (POST, whole answer read) and its close."""
    if name == "http11":
        pool = http11.Pool(url)

        async def call() -> bytes:
            response, _ = await pool.request("POST", HEADERS, BODY)
            return await response.read()

        async def close() -> None:
            pool.close()

        return call, close
    if name == "httpcore":
        core = httpcore2.AsyncConnectionPool(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        header_list = list(HEADERS.items())

        async def call() -> bytes:
            response = await core.request("POST", url, headers=header_list, content=BODY)
            return response.content

        return call, core.aclose
    if name == "httpx":
        transport = httpx2.AsyncHTTPTransport(
            trust_env=False,
            limits=httpx2.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
        )

        async def call() -> bytes:
            response = await transport.handle_async_request(httpx2.Request("POST", url, headers=HEADERS, content=BODY))
            try:
                return await response.aread()
            finally:
                await response.aclose()

        return call, transport.aclose
    if name == "aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))

        async def call() -> bytes:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                return await response.read()

        return call, session.close
    raise ValueError(name)


async def measure(call: Call, concurrency: int, seconds: float) -> tuple[int, list[float], float]:
    """Requests completed, each one's latency (s), CPU seconds spent, over `seconds`."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        clock = time.perf_counter
        while (start := clock()) < stop:
            answer = await call()
            latencies.append(clock() - start)
            if not answer:
                raise RuntimeError("an empty answer")

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, time.process_time() - cpu


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(clients: list[str], seconds: float, rounds: int) -> dict[str, Any]:
    upstream = await fast_upstream()
    url = f"http://127.0.0.1:{upstream.port}/mcp"
    results: dict[str, dict[str, Any]] = {}
    try:
        for mode, concurrency in (("one connection", 1), (f"{CONCURRENCY} concurrent", CONCURRENCY)):
            rates: dict[str, list[float]] = {name: [] for name in clients}
            latencies: dict[str, list[float]] = {name: [] for name in clients}
            cpu: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(rounds):
                for name in clients:
                    call, close = await open_client(name, url)
                    try:
                        await measure(call, concurrency, 0.3)  # warm-up: connections open, code paths hot
                        count, lat, used = await measure(call, concurrency, seconds)
                    finally:
                        await close()
                    rates[name].append(count / seconds)
                    latencies[name] += lat
                    cpu[name].append(used / count)
            for name in clients:
                results.setdefault(mode, {})[name] = {
                    "requests_per_s": round(statistics.median(rates[name])),
                    "p50_ms": round(percentile(latencies[name], 0.50) * 1000, 3),
                    "p99_ms": round(percentile(latencies[name], 0.99) * 1000, 3),
                    "cpu_us_per_request": round(statistics.median(cpu[name]) * 1e6, 1),
                }
    finally:
        upstream.stop()
    return results


def render(results: dict[str, Any]) -> str:
    lines = []
    for mode, by_client in results.items():
        lines.append(f"{mode}:")
        lines.append(f"  {'client':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}")
        for name, row in by_client.items():
            lines.append(
                f"  {name:<10} {row['requests_per_s']:>8} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}"
                f" {row['cpu_us_per_request']:>11.1f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="each client's measured time per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the gateway runs on uvloop")
    parser.add_argument("--clients", default="http11,httpcore,httpx,aiohttp")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    clients = [name.strip() for name in args.clients.split(",") if name.strip()]
    if args.loop == "uvloop":
        import uvloop

        results = uvloop.run(run(clients, args.seconds, args.rounds))
    else:
        results = asyncio.run(run(clients, args.seconds, args.rounds))
    print(render(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
