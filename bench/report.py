"""bench/REPORT.md from the run's JSON."""

from __future__ import annotations

from typing import Any


def _row(name: str, s: dict[str, Any]) -> str:
    return f"| {name} | {s['p50']:.3f} | {s['p95']:.3f} | {s['p99']:.3f} | {s['max']:.3f} | {s['n']} |"


def _added(direct: dict[str, Any], gateway: dict[str, Any]) -> str:
    return (
        f"| added by the gateway | {gateway['p50'] - direct['p50']:.3f} | {gateway['p95'] - direct['p95']:.3f} "
        f"| {gateway['p99'] - direct['p99']:.3f} | | |"
    )


def _latency(title: str, pair: dict[str, Any]) -> list[str]:
    return [
        f"**{title}** (milliseconds)",
        "",
        "| | p50 | p95 | p99 | max | calls |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        _row("direct", pair["direct"]),
        _row("through the gateway", pair["gateway"]),
        _added(pair["direct"], pair["gateway"]),
        "",
    ]


def _cpu(t: dict[str, Any], cores: int | None) -> list[str]:
    """Where a call's CPU time goes, process by process, when the run measured it."""
    if "cpu_ms_per_call" not in t["direct"]:
        return []
    names = list(t["gateway"]["cpu_ms_per_call"])
    lines = [
        "CPU milliseconds a call cost each process (median of the rounds; every process shares the machine's cores):",
        "",
        "| | " + " | ".join(names) + " | all |",
        "| --- |" + " ---: |" * (len(names) + 1),
    ]
    for label, side in (("direct", "direct"), ("through the gateway", "gateway")):
        spent = t[side]["cpu_ms_per_call"]
        cells = " | ".join(f"{spent.get(n, 0):.3f}" for n in names)
        lines.append(f"| {label} | {cells} | {sum(spent.values()):.3f} |")
    spent = t["gateway"]["cpu_ms_per_call"]
    if cores and spent.get("gateway"):
        loop, machine = 1000 / spent["gateway"], cores / sum(spent.values()) * 1000
        lines += [
            "",
            f"At these costs one gateway process (one event loop, one core) carries at most {loop:.0f} calls/s,"
            f" and {cores} cores shared by the three processes at most {machine:.0f} calls/s.",
        ]
    return [*lines, ""]


def _share(t: dict[str, Any]) -> float:
    """Gateway throughput as a share of direct: the median of the paired rounds' shares
    (reports from before that figure existed: the ratio of the two sides' medians)."""
    return float(t.get("share_percent", t["gateway"]["per_second"] / t["direct"]["per_second"] * 100))


def _other_pythons(r: dict[str, Any]) -> list[str]:
    """The same throughput rounds with the gateway under other interpreters (`--also-python`)."""
    others = r.get("throughput_32_other_pythons")
    if not others:
        return []
    lines = [
        f"The same rounds with the gateway under other interpreters (the load client and upstream stay on"
        f" Python {r['machine']['python']}):",
        "",
        "| gateway on | direct calls/s | through the gateway | share | each round's share | gateway CPU ms/call |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for version, t in others.items():
        share = _share(t)
        rounds = ", ".join(f"{v:.0f}%" for v in t.get("round_shares_percent", []))
        cpu = t["gateway"].get("cpu_ms_per_call", {}).get("gateway")
        lines.append(
            f"| Python {version} | {t['direct']['per_second']} | {t['gateway']['per_second']} | **{share:.0f}%**"
            f" | {rounds} | {cpu if cpu is not None else ''} |"
        )
    return [*lines, ""]


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Benchmark report",
        "",
        f"Produced by `{r['command'].strip()}` at commit `{r['commit']}` on {r['when']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + ". Everything (load client, gateway, upstreams, PostgreSQL) runs on this one machine, on loopback.",
        "",
        "Setup: the load client sends 2026-07-28 `tools/call` requests (aiohttp, keep-alive) either straight",
        "to an upstream or to the gateway in front of it. The gateway runs as `mcp-gateway serve` with API-key",
        "auth, a policy bundle, and the audit on its default SQLite store: every call is decided, its decision",
        "row committed before it is forwarded, its completion row written after. `fast` is `bench/fast_upstream.py`",
        "(a lean MCP server whose `tools/call` costs well under a millisecond); `everything` is the example",
        "server built on the `mcp` SDK.",
        "",
        "## Latency, one client",
        "",
        *_latency("fast upstream, one call at a time", r["sequential"]),
        f"Gateway CPU per call: {r['gateway_cpu_ms_per_call']} ms.",
        "",
        *_latency("example everything upstream, one call at a time", r["everything_sequential"]),
        "## Latency at a fixed arrival rate (open loop)",
        "",
        "Latency counts from when each call was due, so queueing is not hidden.",
        "",
    ]
    for rate, pair in r["open_loop"].items():
        lines += _latency(f"{float(rate):.0f} calls/s for {pair['gateway']['n'] / float(rate):.0f} s", pair)
    lines += ["## Throughput, 32 concurrent clients", ""]
    for title, key in (("fast upstream", "throughput_32"), ("example everything upstream", "everything_throughput_32")):
        t = r.get(key)
        if t is None:
            continue
        share = _share(t)
        shares = t.get("round_shares_percent", [])
        lines += [
            f"**{title}**",
            "",
            "| | calls/s | calls | errors |",
            "| --- | ---: | ---: | ---: |",
            *(
                f"| {label} | {t[side]['per_second']} | {t[side]['calls']} | {t[side]['errors']} |"
                for label, side in (("direct", "direct"), ("through the gateway", "gateway"))
            ),
            "",
            f"Through the gateway: **{share:.0f}%** of direct.",
            "",
        ]
        if shares:
            lines += [
                f"{t['rounds']} alternating rounds of {t['round_seconds']:g} s a side. The share is the median of the"
                " rounds' shares (each round's gateway run over its direct run, back to back); calls/s, calls and"
                " errors are each side's median round (errors: all rounds). Each round's share: "
                + ", ".join(f"{v:.0f}%" for v in shares)
                + ".",
                "",
            ]
        lines += _cpu(t, r["machine"].get("cores"))
        if key == "throughput_32":
            lines += _other_pythons(r)
    lines += ["## Kill switch across two replicas (PostgreSQL)", ""]
    k = r["kill_switch_two_replicas"]
    lines += [
        f"{k['rounds']} rounds: a server switch engaged through replica A's admin API while "
        f"{k['calls_in_flight_per_round']} calls to a slow tool were in flight on replica B. Milliseconds "
        "from A's answer (negative: it happened before the answer reached the caller; A cancels its "
        "own calls before it answers, and B, told by NOTIFY, often does too):",
        "",
        "| | p50 | p95 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key in (
        ("first denial on A", "first_denial_on_a_ms"),
        ("first denial on B", "first_denial_on_b_ms"),
        ("calls in flight on B ended", "in_flight_on_b_ended_ms"),
    ):
        s = k[key]
        lines.append(f"| {label} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | {s['max']:.1f} |")
    d = r["decide"]
    lines += [
        "",
        "## `decide()` with 10,000 rules",
        "",
        "Microseconds per decision; cold = the first decision for a target in a snapshot, warm = memoised.",
        "",
        "| rules | cold p50 | cold p99 | warm p50 | warm p99 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key in (("10,000 in one team", "one_team"), ("10,000 in 100 teams", "hundred_teams")):
        s = d[key]
        cold, warm = s["cold_us"], s["warm_us"]
        lines.append(f"| {label} | {cold['p50']} | {cold['p99']} | {warm['p50']} | {warm['p99']} |")
    h = r["handshake_through_gateway"]
    soak = r["soak"]
    lines += [
        "",
        "## Sessions, memory, start",
        "",
        f"- `initialize` through the gateway: p50 {h['initialize']['p50']:.3f} ms, p99 {h['initialize']['p99']:.3f} ms;"
        f" `server/discover`: p50 {h['server/discover']['p50']:.3f} ms, p99 {h['server/discover']['p99']:.3f} ms.",
        f"- Gateway RSS: {r['rss_mb']['idle']} MB idle, {r['rss_mb']['after_load']} MB after the load above.",
        (
            f"- Soak: {soak['seconds']:.0f} s at {soak['rate']:.0f} calls/s; RSS from {soak['rss_first']} MB to "
            f"{soak['rss_last']} MB ({soak['growth_percent']:+.1f}%), sampled every 10 s: {soak['rss_mb_samples']}."
            if soak["rss_mb_samples"]
            else "- Soak: not run (`--soak 0`)."
        ),
        f"- Start to ready (`/readyz` with every upstream up), three starts: {r['start_to_ready_seconds']} s.",
        "",
    ]
    return "\n".join(lines)
