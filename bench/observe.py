"""What observability costs: the gateway with metrics and tracing off, with metrics on, and
with metrics and tracing on (spans exported over OTLP/HTTP to a local sink process), in
one run against the fast upstream.

    python bench/observe.py                          # 5 rounds of 5 s per configuration
    python bench/observe.py --rounds 7 --seconds 5 --calls 3000
    python bench/observe.py --configs metrics --baseline /tmp/old   # against another checkout's code

Measures, per configuration: throughput at 32 clients (rounds rotate the order of the
configurations, so a drift in the machine's speed weighs on all alike; the share is the
median of the rounds' shares against `off`), the latency one client sees and what the
gateway adds to it (gateway minus direct, p50 and p99), and the gateway's CPU per call.
Every call carries a client `traceparent` header, as a traced agent's would. Writes
bench/OBSERVE.md and bench/observe.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import Target, open_loop, sequential, throughput
from bench.observe_micro import hot_path
from bench.procs import (
    ADMIN_HEADERS,
    ROOT,
    Gateway,
    Proc,
    create_key,
    fast_upstream,
    free_port,
    wait_port,
    write_gateway_config,
)

CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"metrics": False},
    "off again": {"metrics": False},  # the control: what the method reads where there is no difference
    "metrics": {"metrics": True},
    "metrics+tracing": {"metrics": True, "otlp_endpoint": None},  # the sink's URL, filled in
}
BASELINE = "metrics, baseline"
"""With `--baseline DIR`: metrics on, the gateway's code taken from DIR (a checkout of another
commit), measured beside this checkout's as every configuration is: a change's before and after."""
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def drained(url: str) -> None:
    """Until the sink has taken nothing new for a second (at most ten)."""
    last, quiet = -1, 0
    for _ in range(40):
        count = (await sink_counts(url))["spans"]
        quiet = quiet + 1 if count == last else 0
        if quiet >= 4:
            return
        last = count
        await asyncio.sleep(0.25)


async def sink_counts(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/count") as response:
        return dict(await response.json())


async def scrape(gateway: Gateway) -> dict[str, float]:
    async with (
        aiohttp.ClientSession(headers=ADMIN_HEADERS) as http,
        http.get(f"http://127.0.0.1:{gateway.port}/metrics") as response,
    ):
        text = await response.text()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("mcp_gateway_calls_total", 'mcp_gateway_requests_total{method="tools/call"')):
            name = line.split("{", 1)[0]
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    configs = {name: CONFIGS[name] for name in CONFIGS if name == "off" or not args.configs or name in args.configs}
    if args.baseline is not None:
        configs[BASELINE] = {"metrics": True}
    fast = await fast_upstream()
    sink_port = free_port()
    sink = Proc([sys.executable, str(ROOT / "bench" / "otlp_sink.py"), "--port", str(sink_port)], sink_port)
    await wait_port(sink_port)
    sink_url = f"http://127.0.0.1:{sink_port}"
    gateways: dict[str, Gateway] = {}
    targets: dict[str, Target] = {}
    try:
        for name, settings in configs.items():
            settings = {k: (sink_url if k == "otlp_endpoint" else v) for k, v in settings.items()}
            config = write_gateway_config(
                work / name, {"fast": {"url": f"http://127.0.0.1:{fast.port}/mcp", "namespace": ""}}, **settings
            )
            key = await create_key(config)
            env = {"PYTHONPATH": str(args.baseline), "PYTHONSAFEPATH": "1"} if name == BASELINE else None
            gateways[name] = Gateway(config, env)
            await gateways[name].ready()
            targets[name] = Target(gateways[name].url, "echo", key, TRACEPARENT)
        direct = Target(f"http://127.0.0.1:{fast.port}/mcp", "echo", None, TRACEPARENT)

        print("latency: one client, sequential", flush=True)
        # In rounds, the order rotated, each configuration's calls beside the direct ones
        # of the same round: a drift in the machine's speed weighs on all alike.
        everyone = {"direct": direct, **targets}
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in everyone}
        for n in range(args.latency_rounds):
            order = list(everyone)[n % len(everyone) :] + list(everyone)[: n % len(everyone)]
            for name in order:
                rounds[name].append(await sequential(everyone[name], args.calls // args.latency_rounds, 50))
        quantiles = ("p50", "p95", "p99")
        latency: dict[str, Any] = {
            name: {q: round(statistics.median(r[q] for r in rounds[name]), 3) for q in quantiles} for name in everyone
        }
        added = {
            name: {
                q: round(statistics.median(r[q] - d[q] for r, d in zip(rounds[name], rounds["direct"], strict=True)), 3)
                for q in quantiles
            }
            for name in targets
        }

        print(f"throughput: 32 clients, {args.rounds} paired rounds of {args.seconds:g} s a side", flush=True)
        names = list(targets)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        shares: dict[str, list[float]] = {name: [] for name in names}
        cpu_shares: dict[str, list[float]] = {name: [] for name in names}

        async def side(name: str) -> tuple[float, float]:
            before = gateways[name].cpu_seconds()
            result = await throughput(targets[name], 32, args.seconds)
            spent = (gateways[name].cpu_seconds() - before) / max(result["calls"], 1) * 1000
            runs[name].append(result)
            cpu[name].append(spent)
            if configs[name].get("otlp_endpoint", 1) is None:
                await drained(sink_url)  # its exporter's backlog must not weigh on the next run
            return result["per_second"], spent

        # Each configuration paired with an `off` run right beside it, the order flipped
        # each round: a drift in the machine's speed weighs on both sides of a pair alike.
        for n in range(args.rounds):
            for other in names[1:]:
                pair = ("off", other) if n % 2 == 0 else (other, "off")
                got = {name: await side(name) for name in pair}
                shares[other].append(got[other][0] / got["off"][0] * 100)
                cpu_shares[other].append(got["off"][1] / got[other][1] * 100 if got[other][1] else 0.0)
            print("  round", n + 1, {name: round(shares[name][-1], 1) for name in names[1:]}, flush=True)
        shares["off"] = [100.0] * len(shares[names[1]])
        cpu_shares["off"] = [100.0] * len(shares[names[1]])
        through: dict[str, Any] = {}
        for name in names:
            ranked = sorted(runs[name], key=lambda r: r["per_second"])
            through[name] = {
                "calls_per_second": ranked[len(ranked) // 2]["per_second"],
                "errors": sum(r["errors"] for r in runs[name]),
                "share_of_off_percent": round(statistics.median(shares[name]), 1),
                "round_shares_percent": [round(s, 1) for s in shares[name]],
                "gateway_cpu_ms_per_call": round(statistics.median(cpu[name]), 4),
                "cpu_share_of_off_percent": round(statistics.median(cpu_shares[name]), 1),
                "round_cpu_shares_percent": [round(s, 1) for s in cpu_shares[name]],
            }
        print(f"fixed rate: {args.rate:g} calls/s, {args.rate_rounds} rounds of {args.rate_seconds:g} s", flush=True)
        fixed: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "p50": [], "p99": []} for name in names}
        for n in range(args.rate_rounds):
            order = names[n % len(names) :] + names[: n % len(names)]
            for name in order:
                before = gateways[name].cpu_seconds()
                result = await open_loop(targets[name], args.rate, args.rate_seconds)
                spent = gateways[name].cpu_seconds() - before
                fixed[name]["cpu"].append(spent / (result["n"] + 100) * 1000)  # with its 100 warm-up calls
                if configs[name].get("otlp_endpoint", 1) is None:
                    await drained(sink_url)
                fixed[name]["p50"].append(result["p50"])
                fixed[name]["p99"].append(result["p99"])
        at_rate = {
            name: {
                "gateway_cpu_ms_per_call": round(statistics.median(f["cpu"]), 4),
                "p50_ms": round(statistics.median(f["p50"]), 3),
                "p99_ms": round(statistics.median(f["p99"]), 3),
                "cpu_share_of_off_percent": round(
                    statistics.median(o / c * 100 for o, c in zip(fixed["off"]["cpu"], f["cpu"], strict=True)), 1
                ),
            }
            for name, f in fixed.items()
        }
        await asyncio.sleep(6)  # the exporter's batch interval: what was queued reaches the sink
        return {
            "latency_one_client_ms": latency,
            "added_ms": added,
            "throughput_32": through,
            "fixed_rate": {"rate": args.rate, "rounds": args.rate_rounds, "seconds": args.rate_seconds, **at_rate},
            "rounds": args.rounds,
            "round_seconds": args.seconds,
            "sink": await sink_counts(sink_url),
            "metrics_scraped": await scrape(gateways["metrics"]) if "metrics" in gateways else {},
        }
    finally:
        for gateway in gateways.values():
            gateway.stop()
        sink.stop()
        fast.stop()


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Observability cost",
        "",
        f"Produced by `{r['command']}` at commit `{r['commit']}` on {r['when']}; {r['machine']}.",
        "Load client, gateways, the fast upstream and the OTLP sink share this machine, on loopback.",
        "`off`: `metrics: false`, no OTLP endpoint. `metrics`: `/metrics` on (the default). `metrics+tracing`:",
        "metrics, and every request's spans (request, audit wait, upstream call) exported over OTLP/HTTP to",
        "`bench/otlp_sink.py`, with the SDK's default batch processor and sampler (parent-based, always on).",
        "`off again` is a second `off` gateway, measured as the others are: how far the method strays where",
        "there is nothing to find (on a machine shared with other work, a long way).",
        "",
        "## Throughput, 32 concurrent clients",
        "",
        "| | calls/s | share of off | each round's share | gateway CPU ms/call | calls/CPU-s, share of off | errors |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, t in r["throughput_32"].items():
        rounds = ", ".join(f"{s:.0f}%" for s in t["round_shares_percent"]) if name != "off" else ""
        lines.append(
            f"| {name} | {t['calls_per_second']} | **{t['share_of_off_percent']}%** | {rounds} | "
            f"{t['gateway_cpu_ms_per_call']} | **{t['cpu_share_of_off_percent']}%** | {t['errors']} |"
        )
    lines += [
        "",
        f"{r['rounds']} rounds; in each, every configuration runs {r['round_seconds']:g} s beside an `off` run of",
        "its own, the order flipped each round; after a traced run the sink is left to drain. The shares are medians",
        "of the pairs' shares. The gateway's CPU per",
        "call is the steadier figure on a busy machine: calls a CPU-second carries, as a share of `off`, is",
        "what a gateway process bound by its one core would keep of its throughput.",
        "",
        "## Latency, one client (milliseconds)",
        "",
        "| | p50 | p95 | p99 | added p50 | added p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lat = r["latency_one_client_ms"]
    d = lat["direct"]
    lines.append(f"| direct | {d['p50']} | {d['p95']} | {d['p99']} | | |")
    for name, added in r["added_ms"].items():
        x = lat[name]
        lines.append(f"| {name} | {x['p50']} | {x['p95']} | {x['p99']} | {added['p50']} | {added['p99']} |")
    lines += [
        "",
        "Medians over the rounds (the calls split into rounds, the order rotated). Added: through the gateway",
        "minus direct, at the same percentile, in the same round.",
    ]
    fixed = r["fixed_rate"]
    lines += [
        "",
        f"## At a fixed rate: {fixed['rate']:g} calls/s (open loop)",
        "",
        "| | p50 ms | p99 ms | gateway CPU ms/call | calls/CPU-s, share of off |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in r["throughput_32"]:
        f = fixed[name]
        lines.append(
            f"| {name} | {f['p50_ms']} | {f['p99_ms']} | {f['gateway_cpu_ms_per_call']} | "
            f"**{f['cpu_share_of_off_percent']}%** |"
        )
    lines += [
        "",
        f"{fixed['rounds']} rounds of {fixed['seconds']:g} s per configuration, rotated; medians. Latency counts from",
        "when each call was due. At one rate every configuration does the same work a second, so the CPU a call",
        "costs compares them without the saturated runs' swings.",
    ]
    sink = r["sink"]
    hot = r["hot_path_us"]
    lines += [
        "",
        "## The request path's share (in process, microseconds per request)",
        "",
        "The observer's calls for one allowed call (begin, decision, audit wait, upstream, completion, end),",
        "least of 25 runs of 10,000, in CPU time (`bench/observe_micro.py`):",
        f"{hot['off']} us with everything off, {hot['metrics']} us with metrics on:",
        f"metrics cost **{hot['metrics_cost']} us** a request (two counters, two histograms).",
    ]
    lines += [
        "",
        f"The sink received {sink['spans']} spans in {sink['requests']} exports ({sink['bytes']} bytes). "
        f"The `metrics` gateway's own count: {r['metrics_scraped']}.",
        "",
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="sequential calls per configuration")
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per configuration per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=400.0, help="calls/s of the fixed-rate rounds")
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument("--rate-rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--configs", nargs="*", choices=list(CONFIGS), help="measure only these (and off)")
    parser.add_argument(
        "--baseline", type=Path, help="a checkout whose code runs one more gateway, metrics on (e.g. git worktree)"
    )
    args = parser.parse_args()
    print("hot path: the observer's calls for one request, in process", flush=True)
    hot = hot_path()
    with tempfile.TemporaryDirectory(prefix="mcp-gateway-observe-") as tmp:
        report = await run(args, Path(tmp))
    report["hot_path_us"] = hot
    report["command"] = "python bench/observe.py " + " ".join(sys.argv[1:])
    report["when"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    report["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    import os
    import platform

    report["machine"] = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "observe.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "OBSERVE.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    asyncio.run(main())
