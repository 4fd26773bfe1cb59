"""What the observer's calls cost one request, in process: no sockets, no other processes'
work in the figure, so a change to the request path's observing shows on a busy machine.

    python bench/observe_micro.py                  # 25 runs of 10,000 requests a configuration
    python bench/observe_micro.py --steps          # and each call on its own

The sequence is what the router and the decision point call for one allowed `tools/call`:
begin, decided, audit wait, upstream, completed, end. Configurations alternate run by run (a
drift in the machine's speed weighs on both alike) and each keeps its least run: what other
processes' noise did not add to. Times are this thread's CPU time (`time.thread_time`), so a
run the scheduler put aside for a while does not count that while.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp_gateway.identity import Principal
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10_000, help="requests a run")
    parser.add_argument("--repeats", type=int, default=25, help="runs a configuration (the least counts)")
    parser.add_argument("--steps", action="store_true", help="also time each call of the sequence on its own")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    report: dict[str, Any] = {"request_us": hot_path(args.iterations, args.repeats)}
    if args.steps:
        report["steps_us"] = step_costs(args.iterations, args.repeats)
    if args.json:
        print(json.dumps(report))
        return
    r = report["request_us"]
    print(f"one request's observing, us of CPU: off {r['off']}, metrics {r['metrics']}, cost {r['metrics_cost']}")
    if args.steps:
        s = report["steps_us"]
        print(f"{'step':12} {'off':>8} {'metrics':>8} {'cost':>8}")
        for step in s["off"]:
            print(f"{step:12} {s['off'][step]:8.3f} {s['metrics'][step]:8.3f} {s['metrics_cost'][step]:8.3f}")


if __name__ == "__main__":
    main()
