"""The load client: the same lean JSON-RPC-over-HTTP client drives the upstream directly and
the gateway, so the difference between the two is what the gateway adds.

Requests are 2026-07-28 `tools/call`s (self-contained POSTs: no session to set up), sent
with aiohttp over keep-alive connections.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

MODERN = "2026-07-28"


@dataclass
class Target:
    url: str
    tool: str
    key: str | None = None
    traceparent: str | None = None
    """Sent as the W3C `traceparent` header, as a traced agent would."""

    def headers(self, method: str = "tools/call", name: str | None = None) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": MODERN,
            "mcp-method": method,
        }
        if name is not None:
            headers["mcp-name"] = name
        if self.key:
            headers["authorization"] = f"Bearer {self.key}"
        if self.traceparent:
            headers["traceparent"] = self.traceparent
        return headers


def call_body(request_id: int, tool: str, arguments: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {
                "name": tool,
                "arguments": arguments,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN,
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            },
        }
    )


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Milliseconds: p50, p95, p99, max, mean."""
    ordered = sorted(samples)
    n = len(ordered)

    def pick(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] * 1000, 3)

    return {
        "n": n,
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(sum(ordered) / n * 1000, 3),
    }


async def _call(session: aiohttp.ClientSession, target: Target, request_id: int, headers: dict[str, str]) -> None:
    body = call_body(request_id, target.tool, {"text": "benchmark"})
    async with session.post(target.url, data=body, headers=headers) as response:
        payload = await response.read()
    if response.status != 200 or b'"error"' in payload[:200]:
        raise RuntimeError(f"call failed: HTTP {response.status}: {payload[:300]!r}")


def _session(connections: int = 64) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=60))


async def sequential(target: Target, count: int, warmup: int = 200) -> dict[str, float]:
    """One client, one call at a time: the latency of a call."""
    headers = target.headers(name=target.tool)
    samples = []
    async with _session(1) as session:
        for i in range(warmup):
            await _call(session, target, i, headers)
        for i in range(count):
            started = time.perf_counter()
            await _call(session, target, i, headers)
            samples.append(time.perf_counter() - started)
    return summary(samples)


async def open_loop(target: Target, rate: float, seconds: float) -> dict[str, float]:
    """Calls sent at a fixed rate whatever the answers do; latency counts from when each
    call was due, so time spent queueing behind slow answers is not hidden."""
    headers = target.headers(name=target.tool)
    samples: list[float] = []
    errors = 0
    async with _session(256) as session:
        for i in range(100):
            await _call(session, target, i, headers)
        start = time.perf_counter()
        total = int(rate * seconds)
        tasks = []

        async def one(i: int, due: float) -> None:
            nonlocal errors
            try:
                await _call(session, target, i, headers)
            except (RuntimeError, aiohttp.ClientError):
                errors += 1
                return
            samples.append(time.perf_counter() - due)

        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    result = summary(samples)
    result["rate"] = rate
    result["errors"] = errors
    return result


async def throughput(target: Target, clients: int, seconds: float) -> dict[str, float]:
    """`clients` callers, each calling again as soon as it has its answer: calls per second."""
    headers = target.headers(name=target.tool)
    done = 0
    errors = 0
    async with _session(clients) as session:
        for i in range(clients * 5):
            await _call(session, target, i, headers)
        stop = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            nonlocal done, errors
            i = offset
            while time.perf_counter() < stop:
                try:
                    await _call(session, target, i, headers)
                    done += 1
                except (RuntimeError, aiohttp.ClientError):
                    errors += 1
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*(caller(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "calls": done,
        "errors": errors,
        "per_second": round(done / elapsed, 1),
    }


async def handshake_latency(url: str, key: str | None, count: int) -> dict[str, dict[str, float]]:
    """`initialize` (a new handshake-era session each time) and 2026-07-28 `server/discover`."""
    auth = {"authorization": f"Bearer {key}"} if key else {}
    init = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"},
            },
        }
    )
    discover = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "server/discover",
            "params": {
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN,
                    "io.modelcontextprotocol/clientCapabilities": {},
                }
            },
        }
    )
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream", **auth}
    modern = {**base, "mcp-protocol-version": MODERN, "mcp-method": "server/discover"}
    out: dict[str, dict[str, float]] = {}
    async with _session(1) as session:
        for name, body, headers in (("initialize", init, base), ("server/discover", discover, modern)):
            samples = []
            for i in range(count + 20):
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    session_id = response.headers.get("mcp-session-id")
                if response.status != 200:
                    raise RuntimeError(f"{name}: HTTP {response.status}")
                if i >= 20:
                    samples.append(time.perf_counter() - started)
                if session_id:  # leave no sessions behind
                    async with session.delete(url, headers={**base, "mcp-session-id": session_id}) as closed:
                        await closed.read()
            out[name] = summary(samples)
    return out


async def throughput_rounds(
    direct: Target,
    through: Target,
    clients: int,
    seconds: float,
    rounds: int,
    cpu: Mapping[str, Callable[[], float]] | None = None,
) -> dict[str, Any]:
    """Throughput direct and through the gateway, alternating in `rounds` rounds (the order
    flipped each round), so a drift in the machine's speed (seen here: a fifth, from one
    minute to the next) weighs on both sides alike. Reports each side's median round,
    every round's share (its gateway run over its direct run, back to back) and the median
    of those shares: the figure a drift moves least.

    `cpu` maps a process's name to its CPU seconds so far: each side then also reports,
    per process, the median CPU milliseconds a call cost it (all processes share the
    machine's cores, so these say where the time of a call goes)."""
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
    costs: dict[str, dict[str, list[float]]] = {"direct": {}, "gateway": {}}
    for n in range(rounds):
        order = (("direct", direct), ("gateway", through))
        for side, target in order if n % 2 == 0 else order[::-1]:
            before = {name: read() for name, read in (cpu or {}).items()}
            run = await throughput(target, clients, seconds)
            runs[side].append(run)
            for name, read in (cpu or {}).items():
                spent = (read() - before[name]) / max(run["calls"], 1) * 1000
                costs[side].setdefault(name, []).append(spent)

    def median(side: str) -> dict[str, float]:
        ranked = sorted(runs[side], key=lambda run: run["per_second"])
        middle = dict(ranked[len(ranked) // 2])
        middle["errors"] = sum(run["errors"] for run in runs[side])
        if costs[side]:
            middle["cpu_ms_per_call"] = {name: round(statistics.median(v), 3) for name, v in costs[side].items()}
        return middle

    shares = [g["per_second"] / d["per_second"] * 100 for d, g in zip(runs["direct"], runs["gateway"], strict=True)]
    return {
        "direct": median("direct"),
        "gateway": median("gateway"),
        "rounds": rounds,
        "round_seconds": seconds,
        "round_shares_percent": [round(share, 1) for share in shares],
        "share_percent": round(statistics.median(shares), 1),
    }
