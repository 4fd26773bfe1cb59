"""`audit verify` on a large log: a full walk against an incremental one from an anchor,
and what a prune of a third of the log costs.

    python bench/audit_verify.py [--rows 300000] [--store sqlite|postgres] [--baseline DIR]

Fills a new store with ROWS hash-chained rows (4 chains, call-sized rows with arguments),
then times, each as the CLI an operator runs: `audit verify` (every row), `audit anchor`,
`audit verify --from-anchor` after 1,000 rows more, and `audit prune --before … --export`
of the oldest third, then `audit verify` again (from the checkpoints).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp_gateway.audit.chain import GENESIS, link
from mcp_gateway.store import open_engine, upgrade
from mcp_gateway.store.audit import appender

CHAINS = 4
START = 1_700_000_000.0


def _row(i: int, ts: float) -> dict[str, Any]:
    decision = i % 2 == 0
    return {
        "ts": ts,
        "kind": "decision" if decision else "completion",
        "call_id": f"c{i // 2:031d}",
        "principal_id": "platform/ci-agent",
        "team_id": "platform",
        "server": "files",
        "tool": "read_file",
        "method": "tools/call",
        "decision": "allow",
        "reason": "allowed by rule platform-files" if decision else None,
        "rule_id": "platform-files",
        "policy_version": 7,
        "arguments": f'{{"path": "/srv/data/reports/2026/11/summary-{i:08d}.csv", "encoding": "utf-8"}}'
        if decision
        else None,
        "args_digest": "9f" * 32 if decision else None,
        "outcome": None if decision else "ok",
        "latency_ms": None if decision else 1.25,
    }


async def fill(url: str, rows: int, start_ts: float = START, heads: dict[str, tuple[int, str]] | None = None) -> None:
    engine = open_engine(url)
    await upgrade(engine)
    await engine.dispose()
    store = appender(url)
    heads = heads if heads is not None else {f"replica-{c}": (0, GENESIS) for c in range(CHAINS)}
    per = rows // CHAINS
    for chain in heads:
        seq, prev = heads[chain]
        batch = []
        for i in range(per):
            seq += 1
            linked = link(_row(i, start_ts + i * 0.005), chain, seq, prev)
            prev = linked["hash"]
            batch.append(linked)
            if len(batch) == 5000:
                await store.append(batch)
                batch = []
        if batch:
            await store.append(batch)
        heads[chain] = (seq, prev)
    await store.aclose()


def timed(config: Path, *args: str, code: Path | None = None) -> tuple[float, float, str]:
    """Wall and CPU seconds of `mcp-gateway audit ARGS` (with `code`: that checkout's package)."""
    env = {**os.environ, "PYTHONPATH": str(code)} if code is not None else None
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "audit", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
    )
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"audit {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    used = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    return took, used, result.stdout.splitlines()[0] if result.stdout else result.stderr.strip()


async def _heads(url: str) -> dict[str, tuple[int, str]]:
    from mcp_gateway.store.audit import heads

    engine = open_engine(url)
    try:
        return {c: (h["chain_seq"], h["hash"]) for c, h in (await heads(engine)).items()}
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also time `audit verify` with the package in DIR (`git archive fb297db mcp_gateway | tar -x -C DIR`)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if args.store == "sqlite":
            url = f"sqlite:///{directory / 'gateway.db'}"
        else:
            import asyncpg

            async def create() -> str:
                conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
                name = f"bench_audit_{int(time.time())}"
                await conn.execute(f'CREATE DATABASE "{name}"')
                await conn.close()
                return f"postgresql://postgres@127.0.0.1:5432/{name}"

            url = asyncio.run(create())
        config = directory / "gateway.yaml"
        config.write_text(yaml.safe_dump({"upstreams": {}, "gateway": {"database_url": url}}))
        started = time.perf_counter()
        asyncio.run(fill(url, args.rows))
        print(f"filled {args.rows:,} rows in {CHAINS} chains in {time.perf_counter() - started:.1f}s ({args.store})")
        figures = {}
        if args.baseline is not None:
            figures[f"verify (full), package from {args.baseline}"] = timed(config, "verify", code=args.baseline)
        figures["verify (full)"] = timed(config, "verify")
        anchor = directory / "anchor.json"
        figures["anchor"] = timed(config, "anchor", "--out", str(anchor))
        asyncio.run(fill(url, 1000, START + 10**6, asyncio.run(_heads(url))))
        figures["verify --from-anchor (1,000 new rows)"] = timed(config, "verify", "--from-anchor", str(anchor))
        figures["verify --expect (full walk + anchor check)"] = timed(config, "verify", "--expect", str(anchor))
        cut = START + (args.rows // CHAINS // 3) * 0.005
        export = directory / "pruned.jsonl"
        figures["prune oldest third --export"] = timed(config, "prune", "--before", str(cut), "--export", str(export))
        figures["verify (full, after the prune)"] = timed(config, "verify")
        print(f"{'':48s} {'wall':>8s} {'CPU':>7s}")
        for name, (took, used, line) in figures.items():
            print(f"{name:48s} {took:7.2f}s {used:6.2f}s  {line}")
        if args.store == "postgres":
            asyncio.run(_drop(url))


async def _drop(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
