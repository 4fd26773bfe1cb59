"""`decide()` with 10,000 rules: cold (the first decision for a target) and warm."""

from __future__ import annotations

import random
import time
from typing import Any

from mcp_gateway.identity import Principal
from mcp_gateway.policy.engine import PolicyState, decide
from mcp_gateway.policy_model import KillSwitch, Rule, Target

from .load import summary


def _rules(teams: int, per_team: int) -> list[Rule]:
    rules = []
    for t in range(teams):
        for r in range(per_team):
            n = t * per_team + r
            if r % 10 == 9:  # one in ten names its servers by pattern
                servers: tuple[str, ...] = (f"svc-{n % 97}-*",)
            else:
                servers = (f"server-{n % 1000}",)
            effect = "deny" if r % 25 == 0 else "allow"
            tools = (f"tool_{n % 50}*", "read_*") if effect == "allow" else ("delete_*",)
            rules.append(Rule(id=f"r{n}", team=f"team-{t}", effect=effect, servers=servers, tools=tools, position=r))  # type: ignore[arg-type]
    return rules


def _targets(count: int, seed: int) -> list[Target]:
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        if rnd.random() < 0.2:
            server = f"svc-{rnd.randrange(97)}-{rnd.randrange(5)}"
        else:
            server = f"server-{rnd.randrange(1000)}"
        tool = rnd.choice([f"tool_{rnd.randrange(60)}x", f"read_{rnd.randrange(9)}", f"delete_{rnd.randrange(9)}"])
        out.append(Target(server, "tool", tool))
    return out


def measure(teams: int, per_team: int, decisions: int = 50_000) -> dict[str, Any]:
    rules = _rules(teams, per_team)
    switches = [KillSwitch(f"ks{i}", "tool", f"server-{i}/tool_{i}", "bench", "bench", 0.0) for i in range(10)]
    state = PolicyState.build(rules, switches, version=1, policy_version=1)
    principals = [Principal(f"team-{t}/agent", f"team-{t}") for t in range(teams)]
    now = time.time()
    cold, warm = [], []
    targets = _targets(decisions, seed=7)
    for i, target in enumerate(targets):  # mostly first decisions for their target
        principal = principals[i % teams]
        started = time.perf_counter_ns()
        decide(state, principal, target, now)
        cold.append((time.perf_counter_ns() - started) / 1e9)
    for i, target in enumerate(targets):  # the same targets again: memoised
        principal = principals[i % teams]
        started = time.perf_counter_ns()
        decide(state, principal, target, now)
        warm.append((time.perf_counter_ns() - started) / 1e9)
    to_us = lambda s: {k: (round(v * 1000, 2) if k not in ("n",) else v) for k, v in s.items()}  # noqa: E731
    return {
        "rules": len(rules),
        "teams": teams,
        "kill_switches": len(switches),
        "cold_us": to_us(summary(cold)),
        "warm_us": to_us(summary(warm)),
    }
