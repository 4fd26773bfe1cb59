"""What the observer's calls cost one request, in process: no sockets, no other processes'
work in the figure, so a change to the request path's observing shows on a busy machine.

    python bench/observe_micro.py                  # 25 runs of 10,000 requests a configuration
    python bench/observe_micro.py --steps          # and each call on its own
    python bench/observe_micro.py --path           # and the whole request path, in process
    python bench/observe_micro.py --path --baseline /tmp/old   # against another checkout's code

The sequence is what the router and the decision point call for one allowed `tools/call`:
begin, decided, audit wait, upstream, completed, end. Configurations alternate run by run (a
drift in the machine's speed weighs on both alike) and each keeps its least run: what other
processes' noise did not add to. Times are this thread's CPU time (`time.thread_time`), so a
run the scheduler put aside for a while does not count that while.

In a loop the observer's code and data stay in the CPU's caches; in the gateway, a request
runs much else between its observer calls. `--path` times `tools/call` through the router,
the decision point, the audit writer (into memory) and an in-process upstream
(`tests/unit/fakes.py`), with the observer off and with metrics, so the difference is what
metrics cost a request where it runs (about three times the loop's figure).
`--baseline DIR` runs the same, alternately, in processes importing `mcp_gateway` from DIR
(e.g. `git worktree add /tmp/old <commit>`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after PYTHONPATH: a --baseline's comes first

import mcp_gateway
from mcp_gateway.identity import LOCAL, Principal
from mcp_gateway.observe.metrics import Metrics
from mcp_gateway.observe.observer import Observer
from mcp_gateway.policy_model import Decision, Target

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PRINCIPAL = Principal("bench/load", "bench")
TARGET = Target("fast", "tool", "echo")
DECISION = Decision("allow", "rule bench-all", "bench-all", 1)
PARAMS: dict[str, Any] = {"name": "echo", "arguments": {"text": "x"}}


def request(observer: Observer) -> None:
    """One allowed call's observing, in the order the request path makes the calls."""
    o = observer.begin("tools/call", PRINCIPAL.id, PRINCIPAL.team, PARAMS, TRACEPARENT)
    observer.decided(TARGET, DECISION)
    with observer.audit_wait():
        pass
    with observer.upstream("fast", "tools/call"):
        pass
    observer.completed(TARGET, PRINCIPAL.team, "tools/call", "allow", "ok")
    observer.end(o, None)


def steps(observer: Observer) -> dict[str, Callable[[], None]]:
    """Each call of `request` on its own (those made inside a request run inside one)."""

    def begin_end() -> None:
        observer.end(observer.begin("tools/call", PRINCIPAL.id, PRINCIPAL.team, PARAMS, TRACEPARENT), None)

    def decided() -> None:
        observer.decided(TARGET, DECISION)

    def audit_wait() -> None:
        with observer.audit_wait():
            pass

    def upstream() -> None:
        with observer.upstream("fast", "tools/call"):
            pass

    def completed() -> None:
        observer.completed(TARGET, PRINCIPAL.team, "tools/call", "allow", "ok")

    return {
        "begin+end": begin_end,
        "decided": decided,
        "audit_wait": audit_wait,
        "upstream": upstream,
        "completed": completed,
    }


def least(runs: dict[str, Callable[[], None]], iterations: int, repeats: int) -> dict[str, float]:
    """Microseconds of CPU per call of each of `runs`, the least of `repeats` runs, interleaved."""
    best = dict.fromkeys(runs, float("inf"))
    for once in runs.values():  # warm up: caches, specialised bytecode, the metrics' first series
        for _ in range(1000):
            once()
    for _ in range(repeats):
        for name, once in runs.items():
            started = time.thread_time()
            for _ in range(iterations):
                once()
            best[name] = min(best[name], (time.thread_time() - started) / iterations * 1e6)
    return {name: round(us, 3) for name, us in best.items()}


def observers() -> dict[str, Observer]:
    return {"off": Observer(), "metrics": Observer(Metrics())}


def hot_path(iterations: int = 10_000, repeats: int = 25) -> dict[str, float]:
    """Microseconds of CPU the observer takes for one allowed call, off and with metrics."""
    result = least({name: _bound(o) for name, o in observers().items()}, iterations, repeats)
    result["metrics_cost"] = round(result["metrics"] - result["off"], 3)
    return result


def _bound(observer: Observer) -> Callable[[], None]:
    return lambda: request(observer)


def step_costs(iterations: int, repeats: int) -> dict[str, dict[str, float]]:
    """Per call of the sequence: off, metrics, and the difference."""
    made = observers()
    out: dict[str, dict[str, float]] = {}
    for name, observer in made.items():
        o = observer.begin("tools/call", PRINCIPAL.id, PRINCIPAL.team, PARAMS, TRACEPARENT)
        try:
            out[name] = least(steps(observer), iterations, repeats)
        finally:
            observer.end(o, None)
    out["metrics_cost"] = {step: round(out["metrics"][step] - out["off"][step], 3) for step in out["off"]}
    return out


def request_path(batches: int = 30, size: int = 200) -> dict[str, float]:
    """Microseconds of CPU one `tools/call` takes through the request path in process,
    observer off and with metrics: the least of `batches` batches of `size` calls each."""
    import anyio

    from mcp_gateway.proxy.session import Call, Session
    from tests.unit.fakes import HANDSHAKE, hotpath

    params = {"name": "files__echo", "arguments": {"text": "x"}}
    best: dict[str, float] = {}

    async def run() -> None:
        async with hotpath() as gw:  # bounded to 20 s (the tests' bound): keep batches * size modest
            session = Session(LOCAL, protocol_version=HANDSHAKE, ephemeral=False)  # the fakes' rules allow it
            made = list(observers().items())
            for n in range(batches):
                for name, observer in made if n % 2 == 0 else made[::-1]:
                    gw.governance.observer = observer
                    gw.audit.rows.clear()  # what the fakes keep must not grow into the figure
                    for server in gw.servers.values():
                        server.received.clear()
                    started = time.thread_time()
                    for _ in range(size):
                        await gw.router.handle(Call(session, 1, "tools/call", params, protocol_version=HANDSHAKE))
                    spent = (time.thread_time() - started) / size * 1e6
                    best[name] = min(best.get(name, spent), spent)

    anyio.run(run)
    result = {name: round(us, 2) for name, us in best.items()}
    result["metrics_cost"] = round(best["metrics"] - best["off"], 2)
    result["metrics_cost_percent"] = round((best["metrics"] / best["off"] - 1) * 100, 2)
    return result


def against(baseline: Path, rounds: int, argv: list[str]) -> dict[str, Any]:
    """This checkout's figures and `baseline`'s, each measured in a process of its own,
    `rounds` times, the order flipped each round; medians."""
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "baseline": []}
    for n in range(rounds):
        for which in ("this", "baseline") if n % 2 == 0 else ("baseline", "this"):
            env = dict(os.environ)
            if which == "baseline":
                env["PYTHONPATH"] = str(baseline)
            out = subprocess.run(
                [sys.executable, __file__, *argv, "--json"], env=env, capture_output=True, text=True, check=True
            )
            runs[which].append(json.loads(out.stdout))
            print(which, out.stdout.strip(), file=sys.stderr, flush=True)
    medians: dict[str, Any] = {}
    for which, reports in runs.items():
        medians[which] = {"code": reports[0]["code"]}
        for part in ("request_us", "path_us"):
            if part in reports[0]:
                medians[which][part] = {
                    k: round(statistics.median(r[part][k] for r in reports), 3) for k in reports[0][part]
                }
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10_000, help="requests a run")
    parser.add_argument("--repeats", type=int, default=25, help="runs a configuration (the least counts)")
    parser.add_argument("--steps", action="store_true", help="also time each call of the sequence on its own")
    parser.add_argument("--path", action="store_true", help="also time the whole request path in process")
    parser.add_argument("--batches", type=int, default=30, help="--path: batches a configuration (the least counts)")
    parser.add_argument("--size", type=int, default=200, help="--path: calls a batch")
    parser.add_argument("--baseline", type=Path, help="a checkout to measure alternately with this one")
    parser.add_argument("--rounds", type=int, default=6, help="--baseline: processes each side")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    if args.baseline is not None:
        argv = [a for a in sys.argv[1:] if a not in ("--json", "--steps")]
        i = argv.index("--baseline")
        del argv[i : i + 2]
        if "--rounds" in argv:
            i = argv.index("--rounds")
            del argv[i : i + 2]
        print(json.dumps(against(args.baseline, args.rounds, argv), indent=2))
        return
    report: dict[str, Any] = {"code": mcp_gateway.__file__, "request_us": hot_path(args.iterations, args.repeats)}
    if args.steps:
        report["steps_us"] = step_costs(args.iterations, args.repeats)
    if args.path:
        report["path_us"] = request_path(args.batches, args.size)
    if args.json:
        print(json.dumps(report))
        return
    r = report["request_us"]
    print(f"one request's observing, us of CPU: off {r['off']}, metrics {r['metrics']}, cost {r['metrics_cost']}")
    if args.path:
        p = report["path_us"]
        print(
            f"the request path in process, us of CPU a call: off {p['off']}, metrics {p['metrics']}, "
            f"cost {p['metrics_cost']} ({p['metrics_cost_percent']}%)"
        )
    if args.steps:
        s = report["steps_us"]
        print(f"{'step':12} {'off':>8} {'metrics':>8} {'cost':>8}")
        for step in s["off"]:
            print(f"{step:12} {s['off'][step]:8.3f} {s['metrics'][step]:8.3f} {s['metrics_cost'][step]:8.3f}")


if __name__ == "__main__":
    main()
