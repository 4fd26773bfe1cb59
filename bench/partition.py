"""Answer times during a PostgreSQL partition (issue 12, item 2).

The gateway (in this process, under uvicorn) reaches PostgreSQL through a forwarder that
black-holes the network for `--seconds`; `--callers` agents call a recording upstream
without pause meanwhile. Reported: the distribution of answer times during the partition
(all should be denials within `store_timeout`, well under 6 s with `snapshot_max_age: 5`),
the denial reasons, and how many calls made during the partition reached the upstream
after the heal (should be 0).

    .venv/bin/python -m bench.partition --seconds 12 --callers 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from mcp.shared.exceptions import MCPError

from tests.stores import PG_HOST, PG_PORT, postgres_database
from tests.support import TcpProxy, agent, recorder_upstream, serve, wait_ready, write_config


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(seconds: float, callers: int) -> dict[str, Any]:
    times: list[float] = []
    reasons: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        log = directory / "calls.log"
        async with anyio.create_task_group() as tg, postgres_database() as pg_url:
            proxy = TcpProxy(PG_HOST, PG_PORT)
            await tg.start(proxy.run)
            config = write_config(
                directory,
                {"rec": recorder_upstream(log)},
                database_url=pg_url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}"),
                snapshot_max_age=5.0,
                snapshot_poll_interval=0.5,
                log_level="error",
            )
            async with serve(config) as (url, gw):
                await wait_ready(gw)
                store_timeout = gw.settings.store_timeout
                end = float("inf")
                warm = 0
                partitioned = anyio.Event()

                async def caller(n: int) -> None:
                    nonlocal warm
                    async with agent(url) as client:
                        await client.call_tool("rec__record", {"text": f"warm {n}"})
                        warm += 1
                        if warm == callers:
                            partitioned.set()
                        await partitioned.wait()
                        i = 0
                        while time.monotonic() < end:
                            i += 1
                            began = time.monotonic()
                            try:
                                await client.call_tool("rec__record", {"text": f"partition {n}.{i}"})
                                reasons["forwarded during the partition"] += 1
                            except MCPError as exc:
                                data = exc.error.data or {}
                                reasons[str(data.get("reason", exc.error.message))[:40]] += 1
                            times.append(time.monotonic() - began)

                async with anyio.create_task_group() as calls:
                    for n in range(callers):
                        calls.start_soon(caller, n)
                    await partitioned.wait()
                    proxy.black_hole()
                    end = time.monotonic() + seconds
                proxy.heal()
                healed = time.monotonic()
                async with agent(url) as client:
                    while True:
                        try:
                            await client.call_tool("rec__record", {"text": "after"})
                            break
                        except MCPError:
                            await anyio.sleep(0.1)
                recovered = time.monotonic() - healed
                await client_settle()
            proxy.cut()
        lines = log.read_text().splitlines()
    late = [line for line in lines if line.startswith("partition")]
    return {
        "partition_seconds": seconds,
        "callers": callers,
        "store_timeout": store_timeout,
        "calls": len(times),
        "answer_seconds": {
            "p50": round(statistics.median(times), 3),
            "p90": round(_quantile(times, 0.9), 3),
            "p99": round(_quantile(times, 0.99), 3),
            "max": round(max(times), 3),
        },
        "answered_within_6s": sum(t <= 6.0 for t in times),
        "reasons": dict(reasons),
        "forwarded_after_heal": len(late),
        "serving_again_after_heal_seconds": round(recovered, 2),
    }


async def client_settle() -> None:
    """Give a late forward (there should be none) the time it would need to show up."""
    await anyio.sleep(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--callers", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps(anyio.run(run, args.seconds, args.callers), indent=2))


if __name__ == "__main__":
    main()
