"""The gateway before and after a change, side by side in one run: what each adds to a
call's latency, what each carries at 32 concurrent clients, and the CPU each spends a call.

    python bench/compare.py --before 1e19178            # about 3-4 minutes
    python bench/compare.py --before da554b0 --rounds 12 --seconds 5 --out /tmp/cmp

`before` is a git revision, checked out for the run in a temporary worktree (`git worktree
add --detach`, removed at the end); `after` is this checkout, as it is on disk. Both gateways
run under this interpreter, each with its own tree first on the path (cwd and PYTHONPATH);
each says which `mcp_gateway/__init__.py` it imported, and the run stops if that is not its
tree's (this venv's editable install points at this checkout). Each gets its own config
directory and SQLite store; both front one fast upstream (`bench/fast_upstream.py`).

Every measurement is made in rounds, each round running `direct`, `before` and `after` back
to back in an order that changes from round to round (each round's order is the last one's
reversed, every two rounds; every position for every side, once every six), so a drift in
the machine's speed weighs on both sides alike. Each round's difference (after minus
before, from the same round) is reported with the rounds' spread, so whether a difference
is noise is something the reader can check. Writes bench/COMPARE.md and bench/compare.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import Target, sequential, throughput
from bench.procs import ROOT, Gateway, create_key, fast_upstream, write_gateway_config
from bench.run import _interpreter, machine, own_cpu_seconds

SIDES = ("direct", "before", "after")
GATEWAYS = ("before", "after")
ORDERS = (
    ("direct", "before", "after"),
    ("after", "before", "direct"),
    ("before", "after", "direct"),
    ("direct", "after", "before"),
    ("after", "direct", "before"),
    ("before", "direct", "after"),
)
"""Each order followed by its reverse: any two rounds put every side once early and once
late, and `before` runs first as often as `after` does."""


class CompareError(Exception):
    """A one-line reason the run cannot go on (shown without a traceback)."""


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(nothing said)"


def git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise CompareError(f"git {' '.join(args)}: {last_line(out.stderr)}")
    return out.stdout.strip()


def resolve(rev: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except CompareError:
        raise CompareError(f"--before {rev!r} names no commit in {ROOT}") from None


def after_commit() -> str:
    """This checkout's commit, with `+changes` when tracked files differ from it."""
    head = git("rev-parse", "--short", "HEAD")
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


@contextlib.contextmanager
def worktree(commit: str, parent: Path) -> Iterator[Path]:
    path = parent / "before-tree"  # beside the config directories, never holding one
    git("worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


def imported_from(gateway: Gateway, tree: Path) -> str:
    """The package file the gateway process itself reports importing; stops the run if it
    is not `tree`'s."""
    for line in gateway.log.read_text(errors="replace").splitlines():
        if line.startswith("mcp_gateway imported from "):
            path = line.removeprefix("mcp_gateway imported from ").strip()
            if not Path(path).resolve().is_relative_to(tree.resolve()):
                raise CompareError(f"the gateway meant to run {tree} imported {path}")
            return path
    raise CompareError(f"the gateway meant to run {tree} did not say where it imported mcp_gateway from")


async def start(work: Path, name: str, tree: Path, upstream_port: int) -> tuple[Gateway, Target]:
    config = write_gateway_config(
        work / f"{name}-config", {"fast": {"url": f"http://127.0.0.1:{upstream_port}/mcp", "namespace": ""}}
    )
    try:
        key = await create_key(config, tree)
    except subprocess.CalledProcessError as error:
        raise CompareError(f"{name}: `keys create` failed: {last_line(error.stderr or '')}") from None
    gateway = Gateway(config, tree=tree)
    try:
        await gateway.ready()
    except (RuntimeError, TimeoutError) as error:
        gateway.stop()
        last = last_line(gateway.log.read_text(errors="replace"))
        raise CompareError(f"{name}: the gateway did not become ready ({error}): {last}") from None
    return gateway, Target(gateway.url, "echo", key)


def order(n: int) -> tuple[str, ...]:
    return ORDERS[n % len(ORDERS)]


async def latency_rounds(
    targets: dict[str, Target], gateways: dict[str, Gateway], args: argparse.Namespace
) -> list[Any]:
    """One client, sequential calls: each side's p50 and p99, the gateways' added latency
    (minus the same round's direct figure) and their CPU per call."""
    rounds = []
    for n in range(args.latency_rounds):
        row: dict[str, Any] = {"order": list(order(n))}
        for side in order(n):
            cpu = gateways[side].cpu_seconds() if side in gateways else 0.0
            result = await sequential(targets[side], args.calls, args.warmup)
            row[side] = {"p50": result["p50"], "p99": result["p99"]}
            if side in gateways:
                spent = gateways[side].cpu_seconds() - cpu
                row[side]["cpu_ms_per_call"] = round(spent / (args.calls + args.warmup) * 1000, 4)
        for side in GATEWAYS:
            for q in ("p50", "p99"):
                row[side][f"added_{q}"] = round(row[side][q] - row["direct"][q], 3)
        rounds.append(row)
        print(
            f"  latency round {n + 1}: added p50 before {row['before']['added_p50']} after {row['after']['added_p50']}"
            f" ms; p99 before {row['before']['added_p99']} after {row['after']['added_p99']} ms",
            flush=True,
        )
    return rounds


async def throughput_rounds(
    targets: dict[str, Target], gateways: dict[str, Gateway], args: argparse.Namespace
) -> list[Any]:
    """`args.clients` callers without pause: calls per second, the share of the same
    round's direct figure, and the gateway's and the load client's CPU per call."""
    rounds = []
    for n in range(args.rounds):
        row: dict[str, Any] = {"order": list(order(n))}
        for side in order(n):
            cpu = gateways[side].cpu_seconds() if side in gateways else 0.0
            client = own_cpu_seconds()
            result = await throughput(targets[side], args.clients, args.seconds)
            calls = max(result["calls"], 1)
            spent_on = calls + args.clients * 5  # with throughput()'s warm-up calls, made before its clock starts
            row[side] = {
                "calls_per_second": result["per_second"],
                "errors": result["errors"],
                "client_cpu_ms_per_call": round((own_cpu_seconds() - client) / spent_on * 1000, 4),
            }
            if side in gateways:
                row[side]["cpu_ms_per_call"] = round((gateways[side].cpu_seconds() - cpu) / spent_on * 1000, 4)
        for side in GATEWAYS:
            row[side]["share_of_direct_percent"] = round(
                row[side]["calls_per_second"] / row["direct"]["calls_per_second"] * 100, 1
            )
        rounds.append(row)
        print(
            f"  throughput round {n + 1}: direct {row['direct']['calls_per_second']}, before"
            f" {row['before']['calls_per_second']}, after {row['after']['calls_per_second']} calls/s",
            flush=True,
        )
    return rounds


MEASURES: tuple[tuple[str, str, str, str, int], ...] = (
    # (label, phase, field, how the difference is given: "ms" after minus before, "%" after over before, digits)
    ("added latency p50, one client (ms)", "latency", "added_p50", "ms", 3),
    ("added latency p99, one client (ms)", "latency", "added_p99", "ms", 3),
    ("gateway CPU per call, one client (ms)", "latency", "cpu_ms_per_call", "ms", 4),
    ("throughput, {clients} clients (calls/s)", "throughput", "calls_per_second", "%", 1),
    ("throughput, share of direct (%)", "throughput", "share_of_direct_percent", "pt", 1),
    ("gateway CPU per call, {clients} clients (ms)", "throughput", "cpu_ms_per_call", "ms", 4),
)


def difference(before: float, after: float, unit: str) -> float:
    if unit == "%":
        return (after / before - 1) * 100 if before else 0.0
    return after - before


def summarise(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per measure: each side's median and range over the rounds, each round's difference
    (after against before, in the same round), their median and range, and a reading."""
    rows = []
    for label, phase, field, unit, digits in MEASURES:
        rounds = report[phase]
        sides = {side: [r[side][field] for r in rounds] for side in GATEWAYS}
        diffs = [difference(b, a, unit) for b, a in zip(sides["before"], sides["after"], strict=True)]
        low, high = min(diffs), max(diffs)
        reading = "within noise" if low <= 0 <= high else f"after {'higher' if low > 0 else 'lower'} in every round"
        rows.append(
            {
                "measure": label.format(clients=report["clients"]),
                "field": f"{phase}.{field}",
                "unit": {"ms": "after minus before", "%": "after over before, % change", "pt": "after minus before"}[
                    unit
                ],
                **{
                    side: {
                        "median": round(statistics.median(v), digits),
                        "min": round(min(v), digits),
                        "max": round(max(v), digits),
                    }
                    for side, v in sides.items()
                },
                "difference": {
                    "median": round(statistics.median(diffs), digits),
                    "min": round(low, digits),
                    "max": round(high, digits),
                    "rounds": [round(d, digits) for d in diffs],
                },
                "reading": reading,
            }
        )
    return rows


def _diff(value: float, unit: str) -> str:
    return f"{value:+g}%" if unit.startswith("after over") else f"{value:+g}"


def markdown(r: dict[str, Any]) -> str:
    before, after = f"`{r['before']['commit'][:7]}`", f"`{r['after']['commit']}`"
    if not r["before"]["commit"].startswith(r["before"]["rev"]):
        before += f" (`{r['before']['rev']}`)"
    lines = [
        "# Before and after",
        "",
        f"Produced by `{r['command']}` on {r['when']}; {r['machine']['cores']} cores ({r['machine']['cpu']}),",
        f"Python {r['machine']['python']}. Before: {before}, imported from",
        f"`{r['before']['imported_from']}`; after: {after}, imported from `{r['after']['imported_from']}`.",
        "Both gateways front one fast upstream on loopback, each with its own SQLite store, API keys and the",
        "allow-all bench policy; the load client shares the machine (its 1-minute load average"
        f" {r['load_average']['start']} at the start, {r['load_average']['end']} at the end).",
        "",
        "| measure | before | after | after - before, median of rounds | each round's difference | "
        "before's rounds | after's rounds | reading |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for s in r["summary"]:
        d, unit = s["difference"], s["unit"]
        each = ", ".join(_diff(x, unit) for x in d["rounds"])
        lines.append(
            f"| {s['measure']} | {s['before']['median']} | {s['after']['median']} | **{_diff(d['median'], unit)}** | "
            f"{each} | {s['before']['min']} to {s['before']['max']} | {s['after']['min']} to {s['after']['max']} | "
            f"{s['reading']} |"
        )
    lines += [
        "",
        "Medians over the rounds. Added latency: through the gateway minus direct, at the same percentile, in the",
        "same round. A difference is after minus before (throughput: after over before, as a % change), taken",
        "within each round, so both sides of it saw the same machine. *Within noise*: the rounds disagree on its",
        "sign (some favour before, some after); compare its median with the rounds' spread on each side. Where",
        f"there is no difference, all {len(r['latency'])} latency rounds agree on a sign by chance one time in"
        f" {2 ** (len(r['latency']) - 1)}, all {len(r['throughput'])} throughput rounds one time in"
        f" {2 ** (len(r['throughput']) - 1)}.",
        "",
        f"## Latency rounds: one client, {r['calls']} sequential calls a side a round (after {r['warmup']} warm-up)",
        "",
        "| round | order | direct p50 / p99 | before added p50 / p99 | after added p50 / p99 | "
        "before / after CPU ms a call |",
        "| ---: | --- | --- | --- | --- | --- |",
    ]
    for n, row in enumerate(r["latency"], 1):
        d, b, a = row["direct"], row["before"], row["after"]
        lines.append(
            f"| {n} | {', '.join(row['order'])} | {d['p50']} / {d['p99']} | {b['added_p50']} / {b['added_p99']} | "
            f"{a['added_p50']} / {a['added_p99']} | {b['cpu_ms_per_call']} / {a['cpu_ms_per_call']} |"
        )
    lines += [
        "",
        f"## Throughput rounds: {r['clients']} clients, {r['seconds']:g} s a side a round",
        "",
        "| round | order | direct calls/s | before calls/s (share) | after calls/s (share) | after / before | "
        "before / after CPU ms a call | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for n, row in enumerate(r["throughput"], 1):
        d, b, a = row["direct"], row["before"], row["after"]
        ratio = a["calls_per_second"] / b["calls_per_second"] * 100 if b["calls_per_second"] else 0.0
        errors = d["errors"] + b["errors"] + a["errors"]
        lines.append(
            f"| {n} | {', '.join(row['order'])} | {d['calls_per_second']} | {b['calls_per_second']} "
            f"({b['share_of_direct_percent']}%) | {a['calls_per_second']} ({a['share_of_direct_percent']}%) | "
            f"{ratio:.1f}% | {b['cpu_ms_per_call']} / {a['cpu_ms_per_call']} | {errors} |"
        )
    lines.append("")
    return "\n".join(lines)


async def run(args: argparse.Namespace, work: Path, before_tree: Path) -> dict[str, Any]:
    fast = await fast_upstream()
    gateways: dict[str, Gateway] = {}
    try:
        targets = {"direct": Target(f"http://127.0.0.1:{fast.port}/mcp", "echo")}
        trees = {"before": before_tree, "after": ROOT}
        imported = {}
        for side in GATEWAYS:
            gateways[side], targets[side] = await start(work, side, trees[side], fast.port)
            imported[side] = imported_from(gateways[side], trees[side])
            print(f"{side}: mcp_gateway from {imported[side]}", flush=True)
        print(f"latency: {args.latency_rounds} rounds of {args.calls} sequential calls a side", flush=True)
        latency = await latency_rounds(targets, gateways, args)
        print(f"throughput: {args.rounds} rounds of {args.seconds:g} s a side, {args.clients} clients", flush=True)
        through = await throughput_rounds(targets, gateways, args)
        return {"imported": imported, "latency": latency, "throughput": through}
    finally:
        for gateway in gateways.values():
            gateway.stop()
        fast.stop()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the git revision to compare this checkout with")
    parser.add_argument("--latency-rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=1500, help="sequential calls a side a latency round")
    parser.add_argument("--warmup", type=int, default=50, help="calls a side before each latency round's")
    parser.add_argument("--rounds", type=int, default=6, help="throughput rounds")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds a side a throughput round")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients in the throughput rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where COMPARE.md and compare.json go")
    args = parser.parse_args()
    for name in ("latency_rounds", "calls", "rounds", "clients"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be above 0 and --warmup at least 0")
    try:
        commit = resolve(args.before)
        report: dict[str, Any] = {
            "command": f"{_interpreter()} bench/compare.py " + " ".join(sys.argv[1:]),
            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine(),
            "before": {"rev": args.before, "commit": commit},
            "after": {"commit": after_commit(), "tree": str(ROOT)},
            "calls": args.calls,
            "warmup": args.warmup,
            "seconds": args.seconds,
            "clients": args.clients,
        }
        with tempfile.TemporaryDirectory(prefix="mcp-gateway-compare-") as tmp, worktree(commit, Path(tmp)) as tree:
            load = os.getloadavg()[0]
            measured = await run(args, Path(tmp), tree)
        report["load_average"] = {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)}
    except CompareError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 1
    for side in GATEWAYS:
        report[side]["imported_from"] = measured["imported"][side]
    report["latency"] = measured["latency"]
    report["throughput"] = measured["throughput"]
    report["summary"] = summarise(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "COMPARE.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
