"""Valid calls' latency while the gateway is attacked before authentication (issue 11, break 6).

One gateway (`mcp-gateway serve`, API keys on) in front of the lean upstream; a load client
sends valid 2026-07-28 `tools/call`s at a fixed rate over connections it opened at the
start, and measures their latency (from when each call was due) in four phases:

    baseline       no attack
    big headers    3 connections, each sending a 128 MiB header, again as soon as it is cut off
    slowloris      1,000 connections dribbling header bytes, reopened as soon as one is closed
    both           the two attacks at once

Attackers run in a process of their own, so their sockets do not slow the load client.
Then the same phases again against the HTTP server alone, in this process, measuring how
long its event loop is held (`loop_lag`).

    python bench/attack.py                  # about two and a half minutes
    python bench/attack.py --no-limits      # the same with the limits lifted (as at da554b0)

Writes bench/ATTACK.md and bench/attack.json (or under --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import Target, _call, summary
from bench.procs import ROOT, Gateway, create_key, fast_upstream, write_gateway_config

NO_LIMITS = {
    "MCP_GATEWAY_MAX_HEADER_BYTES": str(1 << 30),
    "MCP_GATEWAY_MAX_HEADERS": str(1 << 20),
    "MCP_GATEWAY_HEADER_TIMEOUT": "1e9",
    "MCP_GATEWAY_BODY_TIMEOUT": "1e9",
    "MCP_GATEWAY_MAX_CONNECTIONS": str(1 << 20),
}


def raise_open_files(wanted: int) -> int:
    """1,000 attacking sockets (and the gateway's side of them) need more than the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the attackers (run as `attack.py --attacker KIND --port N`) -------------------------


async def big_headers(port: int, connections: int, mib: int, stats: dict[str, int]) -> None:
    """Each connection sends one header of `mib` MiB; when the gateway cuts it off, another."""
    chunk = b"a" * (1 << 20)

    async def one() -> None:
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                stats["refused"] += 1
                await asyncio.sleep(0.05)
                continue
            stats["attempts"] += 1
            try:
                writer.write(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ")
                for _ in range(mib):
                    writer.write(chunk)
                    await writer.drain()
                    stats["bytes"] += len(chunk)
                stats["completed"] += 1  # the whole header went in: nothing cut it off
            except OSError:
                stats["cut_off"] += 1
            finally:
                writer.transport.abort()

    await asyncio.gather(*(one() for _ in range(connections)))


OPEN_SINCE: dict[int, float] = {}
"""When each slowloris connection now open was opened."""


async def slowloris(port: int, connections: int, stats: dict[str, int]) -> None:
    """Each connection sends a request line, then one header byte a second; reopened when closed."""

    async def one(n: int) -> None:
        await asyncio.sleep(n / 1000)  # 1,000 connections opened over a second
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                stats["refused"] += 1
                await asyncio.sleep(1)
                continue
            stats["opened"] += 1
            stats["open"] += 1
            started = time.monotonic()
            OPEN_SINCE[n] = started
            try:
                writer.write(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
                while not reader.at_eof():
                    writer.write(b"a")
                    await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(4096), 1.0) == b"":
                            break
                    except TimeoutError:
                        pass
            except OSError:
                pass
            finally:
                OPEN_SINCE.pop(n, None)
                stats["open"] -= 1
                stats["held_ms_max"] = max(stats["held_ms_max"], int((time.monotonic() - started) * 1000))
                writer.transport.abort()

    await asyncio.gather(*(one(n) for n in range(connections)))


async def attacker(kind: str, port: int, mib: int, connections: int) -> None:
    stats = dict.fromkeys(("attempts", "bytes", "completed", "cut_off", "refused", "opened", "open", "held_ms_max"), 0)
    task = asyncio.ensure_future(
        big_headers(port, connections, mib, stats) if kind == "big" else slowloris(port, connections, stats)
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not task.done():  # a line on stdin asks for the stats; end of stdin ends the attack
        ask = asyncio.ensure_future(reader.readline())
        await asyncio.wait([ask, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done() or not ask.result():
            break
        oldest = min(OPEN_SINCE.values(), default=time.monotonic())
        stats["held_ms_max"] = max(stats["held_ms_max"], int((time.monotonic() - oldest) * 1000))
        print(json.dumps(stats), flush=True)
    task.cancel()


class Attack:
    def __init__(self, kind: str, port: int, mib: int, connections: int) -> None:
        args = ["--attacker", kind, "--port", str(port), "--mib", str(mib), "--connections", str(connections)]
        # At the lowest priority: attackers stand for other machines, and on a shared box
        # their own CPU (a loopback send costs the sender the copy) would otherwise be
        # counted against the gateway.
        self.popen = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.nice(19),
        )

    def stats(self) -> dict[str, int]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write("\n")
        self.popen.stdin.flush()
        return dict(json.loads(self.popen.stdout.readline()))

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.popen.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


# --- the measurement -----------------------------------------------------------------------


async def measure(session: aiohttp.ClientSession, target: Target, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: a call is due every 1/rate s whatever the answers do; its latency counts
    from when it was due. A call that fails or takes over 30 s counts as an error."""
    headers = target.headers(name=target.tool)
    samples: list[float] = []
    errors: list[str] = []

    async def one(i: int, due: float) -> None:
        try:
            await asyncio.wait_for(_call(session, target, i, headers), 30)
        except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
            errors.append(type(exc).__name__)
            return
        samples.append(time.perf_counter() - due)

    start = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    result: dict[str, Any] = summary(samples) if samples else {"n": 0}
    result["errors"] = len(errors)
    return result


async def wait_for(attack: Attack, ready: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while attack.stats()[ready] < count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


def plan(args: argparse.Namespace) -> list[tuple[str, list[tuple[str, int]]]]:
    return [
        ("baseline", []),
        (f"{args.big_connections} x {args.mib} MiB headers", [("big", args.big_connections)]),
        (f"{args.slowloris} slowloris connections", [("slow", args.slowloris)]),
        ("both at once", [("big", args.big_connections), ("slow", args.slowloris)]),
    ]


async def start(kinds: list[tuple[str, int]], port: int, args: argparse.Namespace) -> dict[str, Attack]:
    """The phase's attacks, under way: slowloris connections open, a big header begun."""
    attacks = {kind: Attack(kind, port, args.mib, n) for kind, n in kinds}
    if "slow" in attacks:
        await wait_for(attacks["slow"], "open", args.slowloris * 9 // 10)
    if "big" in attacks:
        await wait_for(attacks["big"], "attempts", 1)
    return attacks


async def loop_lag(args: argparse.Namespace) -> dict[str, Any]:
    """The HTTP server's own event loop under the same attacks: `serve`'s server and
    protocol (default limits, uvloop) in this process, in front of an app that answers at
    once, and a task that sleeps 1 ms and records by how much it overslept. What the
    attacks make the loop wait for shows there, apart from the machine's noise between
    processes (which still adds its share: compare with the baseline)."""
    import socket

    from mcp_gateway.transport import server as http_server

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = http_server.Server(http_server.config(app, "warning", http_server.ConnectionLimits()))
    serving = asyncio.ensure_future(server.serve([sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    out: dict[str, Any] = {}
    try:
        for name, kinds in plan(args):
            print(f"loop lag: {name}", flush=True)
            attacks = await start(kinds, sock.getsockname()[1], args)
            try:
                lags = []
                end = time.perf_counter() + args.seconds
                while time.perf_counter() < end:
                    began = time.perf_counter()
                    await asyncio.sleep(0.001)
                    lags.append(time.perf_counter() - began - 0.001)
            finally:
                for attack in attacks.values():
                    attack.stop()
            out[name] = summary(lags)
    finally:
        server.should_exit = True
        await serving
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"open_files": raise_open_files(args.slowloris * 4 + 1024)}
    work = Path(tempfile.mkdtemp(prefix="mcp-gateway-attack-"))
    fast = await fast_upstream()
    config = write_gateway_config(work, {"fast": {"url": f"http://127.0.0.1:{fast.port}/mcp", "namespace": ""}})
    key = await create_key(config)
    gateway = Gateway(config, env=NO_LIMITS if args.no_limits else None)
    try:
        await gateway.ready()
        target = Target(gateway.url, "echo", key)
        direct = Target(f"http://127.0.0.1:{fast.port}/mcp", "echo")
        connector = aiohttp.TCPConnector(limit=args.clients, keepalive_timeout=3600)
        direct_connector = aiohttp.TCPConnector(limit=args.clients, keepalive_timeout=3600)
        phases: dict[str, Any] = {}
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            aiohttp.ClientSession(connector=direct_connector) as direct_session,
        ):
            # The valid clients' connections are open before any attack starts.
            await asyncio.gather(*(_call(session, target, i, target.headers(name="echo")) for i in range(args.clients)))
            await asyncio.gather(measure(session, target, args.rate, 2), measure(direct_session, direct, args.rate, 2))
            for name, kinds in plan(args):
                print(f"phase: {name}", flush=True)
                attacks = await start(kinds, gateway.port, args)
                try:
                    rss0, cpu0 = gateway.rss_mb(), gateway.cpu_seconds()
                    attack_cpu0 = sum(attack.cpu_seconds() for attack in attacks.values())
                    phase, control = await asyncio.gather(
                        measure(session, target, args.rate, args.seconds),
                        measure(direct_session, direct, args.rate, args.seconds),
                    )
                    phase["direct"] = control
                    phase["attacker_cpu_share"] = round(
                        (sum(attack.cpu_seconds() for attack in attacks.values()) - attack_cpu0) / args.seconds, 2
                    )
                    phase["gateway_rss_mb"] = [round(rss0, 1), round(gateway.rss_mb(), 1)]
                    phase["gateway_cpu_share"] = round((gateway.cpu_seconds() - cpu0) / args.seconds, 2)
                    phase["attack"] = {kind: attack.stats() for kind, attack in attacks.items()}
                finally:
                    for attack in attacks.values():
                        attack.stop()
                phases[name] = phase
                print(json.dumps(phase), flush=True)
        report["phases"] = phases
    finally:
        gateway.stop()
        fast.stop()
    report["load_average"] = [round(x, 1) for x in os.getloadavg()]
    report["settings"] = {
        "limits": "lifted" if args.no_limits else "defaults",
        "rate_per_second": args.rate,
        "seconds_per_phase": args.seconds,
        "client_connections": args.clients,
    }
    return report


def markdown(report: dict[str, Any], lifted: dict[str, Any] | None = None) -> str:
    text = "# Valid calls under attack before authentication\n\n" + table(report)
    if lifted is not None:
        text += "\nThe same with the limits set out of reach (`--no-limits`), as at da554b0"
        text += " (the GC freeze stays):\n\n" + table(lifted)
    if "loop_lag" in report:
        text += LAG_HEAD
        for name, lag in report["loop_lag"].items():
            text += f"| {name} | {lag['n']} | {lag['p50']} | {lag['p99']} | {lag['max']} |\n"
    return text + NOTES


LAG_HEAD = """
The HTTP server's own event loop under the same attacks (`--seconds` each): `serve`'s
server and protocol with the default limits on uvloop, in the bench's process, in front of
an app that answers at once; a task sleeps 1 ms again and again and records by how much it
overslept (ms). This is what the attacks make the loop wait for; the machine's scheduling
noise is in every row, the baseline's included.

| phase | samples | p50 | p99 | max |
|---|---:|---:|---:|---:|
"""


NOTES = """
Reading the figures:

- A big header is cut off at `max_header_bytes` (32 KiB): the gateway answers 431 and
  closes. The MiB "sent per header" are what the kernel's socket buffers took before the
  reset reached the attacker, not what the gateway read. An attacker connection begins a
  new header as soon as its last one is cut off.
- A slowloris connection is closed with 408 after `header_timeout` (10 s) and reopened at
  once by the attacker, so ~1,000 stay open and ~100 come and go each second: that churn
  is what the limits cost. Without them the connections are held for ever (until the
  process runs out of file descriptors); with them a connection is held 10 s plus the
  attacker's own delay in noticing.
- Errors are calls that failed or took over 30 s.
"""


def table(report: dict[str, Any]) -> str:
    s = report["settings"]
    flag = " --no-limits" if s["limits"] == "lifted" else ""
    lines = [
        f"`python bench/attack.py{flag}`: valid `tools/call`s at {s['rate_per_second']:g}/s "
        f"over {s['client_connections']} keep-alive connections opened before the attacks, "
        f"{s['seconds_per_phase']:g} s per phase; latency in ms from when each call was due.",
        "",
        "The control is the same calls sent straight to the upstream at the same time: what the",
        f"machine itself adds ({os.cpu_count()} cores shared with other work; load average "
        f"{report.get('load_average', ['?'])[0]} at the end of the run). Attackers run at the lowest CPU priority.",
        "",
        "| phase | calls | errors | p50 | p99 | max | control p50 / p99 | gateway CPU | gateway RSS MB | attack |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for name, p in report["phases"].items():
        attack = []
        for kind, st in p["attack"].items():
            if kind == "big":
                attack.append(
                    f"{st['attempts']} headers begun, {st['cut_off']} cut off, {st['completed']} sent whole, "
                    f"{st['bytes'] / max(st['attempts'], 1) / (1 << 20):.1f} MiB sent per header"
                )
            else:
                attack.append(
                    f"{st['open']} open, {st['opened']} opened, {st['refused']} refused, "
                    f"longest held {st['held_ms_max'] / 1000:.1f} s"
                )
        if attack:
            attack.append(f"attackers used {p['attacker_cpu_share'] * 100:.0f}% of a core")
        lines.append(
            f"| {name} | {p['n']} | {p['errors']} | {p.get('p50', '-')} | {p.get('p99', '-')} | {p.get('max', '-')} "
            f"| {p['direct'].get('p50', '-')} / {p['direct'].get('p99', '-')} "
            f"| {p['gateway_cpu_share'] * 100:.0f}% | {p['gateway_rss_mb'][0]} → {p['gateway_rss_mb'][1]} "
            f"| {'; '.join(attack) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="valid calls per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--clients", type=int, default=8, help="the valid clients' connections")
    parser.add_argument("--mib", type=int, default=128, help="size of each big header")
    parser.add_argument("--big-connections", type=int, default=3)
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--no-limits", action="store_true", help="lift the gateway's limits (as at da554b0)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--attacker", choices=("big", "slow"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        asyncio.run(attacker(args.attacker, args.port, args.mib, args.connections))
        return
    report = asyncio.run(run(args))
    if not args.no_limits:
        import uvloop

        report["loop_lag"] = uvloop.run(loop_lag(args))
    stem = "attack-no-limits" if args.no_limits else "attack"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    with_limits, lifted = (args.out / "attack.json"), (args.out / "attack-no-limits.json")
    if with_limits.exists():
        # The report shows a run with the limits, and beside it the last run without them.
        text = markdown(
            json.loads(with_limits.read_text()), json.loads(lifted.read_text()) if lifted.exists() else None
        )
        (args.out / "ATTACK.md").write_text(text)
    print(table(report))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
