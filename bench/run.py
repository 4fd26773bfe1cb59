"""The benchmark harness: what the gateway costs an agent, measured beside calling the
upstream directly, in one run on one machine.

    python bench/run.py                 # the full run (about 20 minutes: a 10-minute soak)
    python bench/run.py --soak 60       # a shorter soak
    python bench/run.py --also-python .venv/bin/python   # throughput with the gateway under another interpreter too

Writes bench/REPORT.md and bench/report.json. Needs PostgreSQL (the replica measurements)
at $MCP_GATEWAY_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test; a database is
created and dropped for the run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import decide as decide_bench
from bench import killswitch
from bench.load import Target, handshake_latency, open_loop, sequential, throughput_rounds
from bench.procs import ROOT, Gateway, Proc, create_key, everything_upstream, fast_upstream, write_gateway_config
from bench.report import markdown

PG = os.environ.get("MCP_GATEWAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {p: version(p) for p in ("mcp", "uvicorn", "uvloop", "aiohttp", "sqlalchemy", "asyncpg", "orjson")},
    }


async def _pg_database() -> tuple[str, str]:
    name = f"gw_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, PG.rsplit("/", 1)[0] + "/" + name


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _interpreter() -> str:
    """How the command that ran this names its interpreter: a venv in the checkout by its path."""
    path = Path(sys.executable)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else "python"


def own_cpu_seconds() -> float:
    """This process's CPU seconds: the load client's."""
    times = os.times()
    return times.user + times.system


async def latency_section(work: Path, report: dict[str, Any], args: argparse.Namespace) -> None:
    fast = await fast_upstream()
    everything = await everything_upstream()
    config = write_gateway_config(
        work / "single",
        {
            "fast": {"url": f"http://127.0.0.1:{fast.port}/mcp", "namespace": ""},
            "everything": {"url": f"http://127.0.0.1:{everything.port}/mcp"},
        },
    )
    key = await create_key(config)
    starts = []
    gateway = None
    try:
        for _ in range(3):  # start to ready, three times (the first also creates the store)
            if gateway is not None:
                gateway.stop()
            gateway = Gateway(config)
            starts.append(round(await gateway.ready(), 3))
        assert gateway is not None
        report["start_to_ready_seconds"] = starts
        report["rss_mb"] = {"idle": round(gateway.rss_mb(), 1)}

        direct = Target(f"http://127.0.0.1:{fast.port}/mcp", "echo")
        through = Target(gateway.url, "echo", key)
        print("latency: one client, sequential", flush=True)
        cpu0 = gateway.cpu_seconds()
        report["sequential"] = {
            "direct": await sequential(direct, args.calls),
            "gateway": await sequential(through, args.calls),
        }
        report["gateway_cpu_ms_per_call"] = round((gateway.cpu_seconds() - cpu0) / (args.calls + 200) * 1000, 3)
        print("latency: open loop", flush=True)
        report["open_loop"] = {}
        for rate in args.rates:
            report["open_loop"][str(rate)] = {
                "direct": await open_loop(direct, rate, args.open_seconds),
                "gateway": await open_loop(through, rate, args.open_seconds),
            }
        print("throughput: 32 clients", flush=True)
        cpu = {"load client": own_cpu_seconds, "upstream": fast.cpu_seconds, "gateway": gateway.cpu_seconds}
        report["throughput_32"] = await throughput_rounds(
            direct, through, 32, args.throughput_seconds, args.throughput_rounds, cpu
        )
        if args.also_python:
            report["throughput_32_other_pythons"] = await other_pythons(work, fast, args)
        print("latency and throughput: the example everything server", flush=True)
        everything_direct = Target(f"http://127.0.0.1:{everything.port}/mcp", "echo")
        everything_through = Target(gateway.url, "everything__echo", key)
        report["everything_sequential"] = {
            "direct": await sequential(everything_direct, args.calls // 5, 50),
            "gateway": await sequential(everything_through, args.calls // 5, 50),
        }
        cpu = {"load client": own_cpu_seconds, "upstream": everything.cpu_seconds, "gateway": gateway.cpu_seconds}
        report["everything_throughput_32"] = await throughput_rounds(
            everything_direct, everything_through, 32, args.throughput_seconds, args.throughput_rounds, cpu
        )
        print("latency: initialize and server/discover through the gateway", flush=True)
        report["handshake_through_gateway"] = await handshake_latency(gateway.url, key, 300)
        report["rss_mb"]["after_load"] = round(gateway.rss_mb(), 1)

        print(f"soak: {args.soak:.0f} s at {args.soak_rate} calls/s", flush=True)
        samples = []
        soak_end = time.monotonic() + args.soak
        while time.monotonic() < soak_end:
            chunk = min(10.0, soak_end - time.monotonic())
            if chunk <= 0:
                break
            await open_loop(through, args.soak_rate, chunk)
            samples.append(round(gateway.rss_mb(), 1))
        report["soak"] = {
            "seconds": args.soak,
            "rate": args.soak_rate,
            "rss_mb_samples": samples,
            "rss_first": samples[0] if samples else None,
            "rss_last": samples[-1] if samples else None,
            "growth_percent": round((samples[-1] - samples[0]) / samples[0] * 100, 1) if samples else None,
        }
    finally:
        if gateway is not None:
            gateway.stop()
        fast.stop()
        everything.stop()


def python_version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, check=True
    ).stdout.strip()


async def other_pythons(work: Path, fast: Proc, args: argparse.Namespace) -> dict[str, Any]:
    """The 32-client throughput again, with the gateway under each interpreter of
    `--also-python` (the same load client, upstream and rounds; a store of its own each)."""
    results: dict[str, Any] = {}
    for n, python in enumerate(args.also_python):
        config = write_gateway_config(
            work / f"python-{n}", {"fast": {"url": f"http://127.0.0.1:{fast.port}/mcp", "namespace": ""}}
        )
        key = await create_key(config)
        gateway = Gateway(config, python=python)
        try:
            await gateway.ready()
            version = python_version(python)
            print(f"throughput: 32 clients, gateway on Python {version}", flush=True)
            direct = Target(f"http://127.0.0.1:{fast.port}/mcp", "echo")
            cpu = {"load client": own_cpu_seconds, "upstream": fast.cpu_seconds, "gateway": gateway.cpu_seconds}
            results[version] = await throughput_rounds(
                direct, Target(gateway.url, "echo", key), 32, args.throughput_seconds, args.throughput_rounds, cpu
            )
        finally:
            gateway.stop()
    return results


async def replica_section(work: Path, report: dict[str, Any], args: argparse.Namespace) -> None:
    name, url = await _pg_database()
    everything = await everything_upstream()
    config = write_gateway_config(
        work / "replicas", {"everything": {"url": f"http://127.0.0.1:{everything.port}/mcp"}}, database_url=url
    )
    a = b = None
    try:
        key = await create_key(config)
        a, b = (
            Gateway(config, {"MCP_GATEWAY_REPLICA_ID": "bench-a"}),
            Gateway(config, {"MCP_GATEWAY_REPLICA_ID": "bench-b"}),
        )
        await a.ready()
        await b.ready()
        print(f"kill switch: {args.kill_rounds} rounds across two replicas on PostgreSQL", flush=True)
        report["kill_switch_two_replicas"] = await killswitch.rounds(a.url, b.url, a.admin, key, args.kill_rounds)
    finally:
        for gateway in (a, b):
            if gateway is not None:
                gateway.stop()
        everything.stop()
        await _drop(name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="sequential calls per side")
    parser.add_argument("--rates", type=float, nargs="+", default=[200.0, 500.0], help="open-loop arrival rates")
    parser.add_argument("--open-seconds", type=float, default=10.0)
    parser.add_argument("--throughput-seconds", type=float, default=5.0, help="seconds per side per round")
    parser.add_argument("--throughput-rounds", type=int, default=7, help="alternating rounds, direct and gateway")
    parser.add_argument("--soak", type=float, default=600.0, help="soak duration in seconds")
    parser.add_argument("--soak-rate", type=float, default=200.0)
    parser.add_argument("--kill-rounds", type=int, default=20)
    parser.add_argument(
        "--also-python",
        nargs="+",
        default=[],
        metavar="PYTHON",
        help="also measure the 32-client throughput with the gateway under these interpreters (each with"
        " mcp-gateway installed)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()

    report: dict[str, Any] = {
        "command": f"{_interpreter()} bench/run.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
    }
    print("decide(): 10,000 rules", flush=True)
    report["decide"] = {
        "one_team": decide_bench.measure(1, 10_000),
        "hundred_teams": decide_bench.measure(100, 100),
    }
    with tempfile.TemporaryDirectory(prefix="mcp-gateway-bench-") as tmp:
        work = Path(tmp)
        await latency_section(work, report, args)
        await replica_section(work, report, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "REPORT.md").write_text(markdown(report))
    print(f"wrote {args.out / 'REPORT.md'}")


if __name__ == "__main__":
    asyncio.run(main())
