"""Fuzz the gateway's doors: mutated inputs to `/mcp` (both protocol eras) and `/admin/api`,
against a real `mcp-gateway serve` (`auth: keys`) in front of two recording upstreams.

    .venv/bin/python fuzz/run.py --inputs 100000 --seed 1          # the full run
    .venv/bin/python fuzz/run.py --inputs 2000 --seed 1            # a quick look
    .venv/bin/python fuzz/run.py --seed 1 --only 4711              # make input 4711 again, alone

After every batch it checks: a valid call still works (both eras); no HTTP 500 and no
traceback in the gateway's log; the recorders received nothing the policy does not allow
(`decide()` over the live rules, for the one principal whose team has any); RSS, once
warmed up, grows less than 10%. Engaged kill switches are released between batches (a
fuzzed admin call may have engaged one). Inputs that got a 500 or a JSON-RPC -32603, and
batches that logged a traceback, are saved under `--out` with enough to replay them.
Loopback only; bounded by `--inputs` and `--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.mutate import Context, Input, make_input
from mcp_gateway.identity import Principal
from mcp_gateway.policy.engine import PolicyState, decide
from mcp_gateway.policy_model import Rule, Target

ROOT = Path(__file__).resolve().parent.parent
RECORDER = ROOT / "tests" / "properties" / "recording_server.py"
POLICY = """
teams:
  fuzz:
    rules:
      - id: fuzz-alpha
        allow: {servers: [alpha], tools: ["read_*", search, ask], prompts: [greet], resources: ["file:///srv/public/*"]}
      - id: fuzz-beta
        allow:
          servers: [beta]
          tools: [read_file, ask]
          prompts: [summarize]
          resources: ["test://static/*"]
          arguments: {path: {pattern: "^/srv/public/"}}
      - id: fuzz-no-deletes
        deny: {servers: ["*"], tools: ["delete_*"], prompts: ["admin_*"], resources: ["file:///srv/secret/*"]}
"""
HOUSEKEEPING = {
    "initialize",
    "notifications/initialized",
    "server/discover",
    "ping",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "logging/setLevel",
    "notifications/cancelled",
    "resources/unsubscribe",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Gateway:
    """`mcp-gateway serve` as a subprocess, with its log, store and recorders in `work`."""

    def __init__(self, work: Path, trace: Path | None = None) -> None:
        self.work = work
        self.trace = trace
        """With a directory: the gateway runs under tracemalloc (`fuzz/traced.py`) and dumps
        snapshots there on SIGUSR1 (`dump()`)."""
        self.port = free_port()
        self.admin_token = "fuzz-admin-" + secrets.token_urlsafe(16)
        self.logs = {"alpha": work / "alpha.log", "beta": work / "beta.log"}
        self.log = work / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "mcp_gateway", *args, "--config", str(self.work / "gateway.yaml")],
            capture_output=True,
            text=True,
            check=True,
            cwd=self.work,
        )
        return out.stdout + out.stderr

    def prepare(self) -> tuple[str, str, str]:
        (self.work / "policies").mkdir(parents=True, exist_ok=True)
        (self.work / "policies" / "fuzz.yaml").write_text(POLICY)
        upstreams = {
            name: {
                "command": sys.executable,
                "args": [str(RECORDER)],
                "env": {"RECORDER_LOG": str(log), "RECORDER_ERA": "2026-07-28" if name == "beta" else "handshake"},
                "timeout": 10,
            }
            for name, log in self.logs.items()
        }
        config = {"upstreams": upstreams, "gateway": {"auth": "keys", "policies": "policies", "log_level": "info"}}
        (self.work / "gateway.yaml").write_text(json.dumps(config))
        self.cli("db", "upgrade")
        # The probe is the harness's own principal for its liveness calls: fuzzed inputs never
        # use its key, so they cannot spend its quotas (sessions, streams) for it.
        keys = [
            re.search(r"mgw_\S+", self.cli("keys", "create", "--team", team, "--name", name))
            for team, name in (("fuzz", "agent"), ("other", "agent"), ("fuzz", "probe"))
        ]
        assert all(keys), "no key printed"
        return keys[0].group(0), keys[1].group(0), keys[2].group(0)  # type: ignore[union-attr]

    async def start(self) -> None:
        env = {**os.environ, "MCP_GATEWAY_ADMIN_TOKEN": self.admin_token}
        entry = ["-m", "mcp_gateway"]
        if self.trace is not None:
            entry = [str(ROOT / "fuzz" / "traced.py")]
            env["FUZZ_TRACE_DIR"] = str(self.trace)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 (started once, before any input)
                [
                    sys.executable,
                    *entry,
                    "serve",
                    "--config",
                    str(self.work / "gateway.yaml"),
                    "--port",
                    str(self.port),
                ],
                cwd=self.work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gateway exited: {self.log.read_text()[-3000:]}")
            status, body = await http(self.port, "GET", "/readyz", [("host", "127.0.0.1")], b"", timeout=2)
            if status == 200 and all(u["state"] == "ready" for u in json.loads(body).get("upstreams", [])):
                return
            await asyncio.sleep(0.2)
        raise SystemExit("gateway not ready after 60 s")

    async def dump(self) -> None:
        """Have the traced gateway write a tracemalloc snapshot (and its smaps) and wait for it."""
        assert self.trace is not None and self.process is not None
        done = len(list(self.trace.glob("snapshot-*.txt")))
        self.process.send_signal(signal.SIGUSR1)
        # Another process writes the file: polled, there is no event to wait on.
        while len(list(self.trace.glob("snapshot-*.txt"))) <= done and self.process.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


async def http(
    port: int,
    method: str,
    path: str,
    headers: list[tuple[str, Any]],
    body: bytes,
    content_length: int | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own connection; (status, body). Status 0: no answer in
    time (a request the gateway is still waiting on, e.g. a short Content-Length); -1: the
    connection was refused or reset before an answer (e.g. an oversized body cut off)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError):
        return -1, b""
    try:
        head = [f"{method} {path} HTTP/1.1".encode()]
        for name, value in headers:
            head.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("utf-8")))
        declared = len(body) if content_length is None else content_length
        if method in ("POST", "PUT", "PATCH") or body:
            head.append(f"content-length: {declared}".encode())
        head.append(b"connection: close")
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        try:
            # A server that stops reading an oversized body must not hold the harness.
            await asyncio.wait_for(writer.drain(), timeout)
        except TimeoutError:
            return 0, b""
        chunks: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + timeout
        streaming = False
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                # An event stream never ends: once it is one, a short silence ends the wait.
                chunk = await asyncio.wait_for(reader.read(65536), min(remaining, 0.3) if streaming else remaining)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not streaming and b"text/event-stream" in b"".join(chunks)[:2000].lower():
                streaming = True
        data = b"".join(chunks)
        match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        if not match:
            return 0, data
        _, _, rest = data.partition(b"\r\n\r\n")
        return int(match.group(1)), rest
    except (OSError, ConnectionError):
        return -1, b""
    finally:
        writer.close()


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work).resolve()
        self.out = Path(args.out).resolve()
        self.gateway = Gateway(self.work, Path(args.trace_memory).resolve() if args.trace_memory else None)
        self.statuses: collections.Counter[int] = collections.Counter()
        self.rpc_errors: collections.Counter[int] = collections.Counter()
        self.findings: list[dict[str, Any]] = []
        self.tracebacks = 0
        self.ungoverned: list[dict[str, Any]] = []
        self.liveness_failures = 0
        self.offsets = {name: 0 for name in self.gateway.logs}
        self.listening: dict[str, set[str]] = {name: set() for name in self.gateway.logs}
        """The resources each 2026-07-28 upstream was last asked to listen to (each new
        listen repeats the whole set: only additions are new forwards)."""
        self.log_offset = 0
        self.rss: list[int] = []
        self.sent = 0
        self.crashed = ""
        self.skipped: collections.Counter[str] = collections.Counter()
        self.malloc_report = ""

    # -- setup ---------------------------------------------------------------------------

    async def setup(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        key, other, self.probe_key = self.gateway.prepare()
        await self.gateway.start()
        self.ctx = Context(key=key, other_key=other, admin_token=self.gateway.admin_token)
        self.ctx.session = await self.initialize(key)
        self.ctx.other_session = await self.initialize(other)
        self.principal = Principal(id="fuzz/agent", team="fuzz", name="agent", kind="agent")
        status, body = await self.admin("GET", "/rules")
        assert status == 200, (status, body)
        rules = []
        for item in json.loads(body)["items"]:
            kinds: dict[str, Any] = {
                k: tuple(item[k]) for k in ("servers", "tools", "prompts", "resources") if item.get(k) is not None
            }
            rules.append(
                Rule(
                    id=item["id"],
                    team=item["team"],
                    effect=item["effect"],
                    arguments=item.get("arguments"),
                    shadow=item.get("shadow", False),
                    position=item.get("position", 0),
                    **kinds,
                )
            )
        self.oracle = PolicyState.build(rules)

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = [
            ("host", "127.0.0.1"),
            ("authorization", f"Bearer {self.gateway.admin_token}"),
            ("content-type", "application/json"),
        ]
        data = json.dumps(body).encode() if body is not None else b""
        return await http(self.gateway.port, method, "/admin/api" + path, headers, data)

    async def engaged_switches(self) -> list[str]:
        """The engaged kill switches' ids: from the API, or, when it cannot list them (a
        finding in itself, already saved), from the store, so later batches run unswitched."""
        status, body = await self.admin("GET", "/kill-switches")
        if status == 200:
            return [switch["id"] for switch in json.loads(body).get("items", [])]
        with sqlite3.connect(self.work / "mcp-gateway.db") as db:
            return [row[0] for row in db.execute("SELECT id FROM kill_switches WHERE released_at IS NULL")]

    async def renew(self, key: str, current: str) -> str:
        """A fresh session for the fuzzed inputs, or the current one when the principal is
        at its session quota (fuzzed `initialize`s spend it: the gateway's answer is 429)."""
        try:
            return await self.initialize(key)
        except AssertionError as refused:
            if b" 429 " not in str(refused).encode():
                raise
            return current

    async def initialize(self, key: str) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.gateway.port)
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz"}},
            }
        ).encode()
        writer.write(
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer "
            + key.encode()
            + b"\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        data = await reader.read()
        writer.close()
        match = re.search(rb"mcp-session-id: (\S+)", data, re.I)
        assert match, data[:500]
        return match.group(1).decode()

    # -- checks ---------------------------------------------------------------------------

    async def ready(self) -> bool:
        headers = [("host", "127.0.0.1"), ("authorization", f"Bearer {self.gateway.admin_token}")]
        status, body = await http(self.gateway.port, "GET", "/readyz", headers, b"")
        upstreams = json.loads(body).get("upstreams", []) if status == 200 else []
        if status != 200 or any(u.get("state") != "ready" for u in upstreams):
            print(f"  liveness: /readyz answered {status} {body[:300]!r}", flush=True)
            return False
        return True

    async def valid_call(self) -> bool:
        """A governed call on each era reaches the upstream and comes back."""
        ok = True
        probe_session = await self.initialize(self.probe_key)
        for era in ("2026-07-28", "2025-11-25"):
            params: dict[str, Any] = {"name": "alpha__read_file", "arguments": {"path": "/srv/public/ok"}}
            headers = [
                ("host", "127.0.0.1"),
                ("authorization", f"Bearer {self.probe_key}"),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("mcp-protocol-version", era),
            ]
            if era == "2026-07-28":
                params["_meta"] = {
                    "io.modelcontextprotocol/protocolVersion": era,
                    "io.modelcontextprotocol/clientCapabilities": {},
                }
                headers += [("mcp-method", "tools/call"), ("mcp-name", "alpha__read_file")]
            else:
                headers.append(("mcp-session-id", probe_session))
            body = json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": params}).encode()
            status, answer = await http(self.gateway.port, "POST", "/mcp", headers, body, timeout=10)
            if status != 200 or b"read_file" not in answer or b'"error"' in answer:
                print(f"  liveness: {era} valid call answered {status} {answer[:300]!r}", flush=True)
                ok = False
        end = [("host", "127.0.0.1"), ("authorization", f"Bearer {self.probe_key}"), ("mcp-session-id", probe_session)]
        await http(self.gateway.port, "DELETE", "/mcp", end, b"")
        return ok

    def read_new(self, path: Path, offset: int) -> tuple[str, int]:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
        return data.decode("utf-8", "replace"), offset + len(data)

    def check_forwards(self) -> list[dict[str, Any]]:
        """What reached the upstreams and the policy does not allow for the `fuzz` team
        (the only team with any rule: whatever else reached an upstream is ungoverned)."""
        bad = []
        for server, path in self.gateway.logs.items():
            text, self.offsets[server] = self.read_new(path, self.offsets[server])
            for line in text.splitlines():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict) or message.get("method") in HOUSEKEEPING or "method" not in message:
                    continue
                found = targets_of(server, message)
                if message.get("method") == "subscriptions/listen":
                    names = {t.name for t, _ in found}
                    found = [(t, a) for t, a in found if t.name not in self.listening[server]]
                    self.listening[server] = names
                for target, arguments in found:
                    verdict = decide(self.oracle, self.principal, target, time.time(), arguments=arguments)
                    if not verdict.allowed:
                        bad.append({"server": server, "message": message, "reason": verdict.reason})
        return bad

    # -- the run ---------------------------------------------------------------------------

    async def send(self, index: int) -> None:
        item = make_input(self.args.seed, index, self.ctx)
        if self.args.skip_notes and re.search(self.args.skip_notes, item.note):
            self.skipped["--skip-notes"] += 1
            return
        if self.args.skip_known:
            known = known_break(item)
            if known:
                self.skipped[known] += 1
                return
        status, body = await http(
            self.gateway.port,
            item.method,
            item.path,
            item.headers,
            item.body,
            item.content_length,
            timeout=self.args.timeout,
        )
        self.statuses[status] += 1
        code = None
        for match in re.finditer(rb'"code":\s*(-?\d+)', body[:100000]):
            code = int(match.group(1))
            self.rpc_errors[code] += 1
        if status == 500 or code == -32603:
            self.save(index, item, f"status {status}, JSON-RPC {code}", body)

    def save(self, index: int, item: Input, why: str, answer: bytes = b"") -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        record = {
            "seed": self.args.seed,
            "index": index,
            "why": why,
            "input": item.describe(),
            "answer": answer[:4000].decode("utf-8", "replace"),
        }
        (self.out / f"finding-{self.args.seed}-{index}.json").write_text(json.dumps(record, indent=1))
        self.findings.append(record)

    async def batch(self, start: int, stop: int) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(start, stop):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                await self.send(queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))
        self.sent += stop - start

    async def after_batch(self, number: int, start: int, stop: int) -> None:
        # A fuzzed DELETE may have ended the session the next inputs use: start fresh ones.
        self.ctx.session = await self.renew(self.ctx.key, self.ctx.session)
        self.ctx.other_session = await self.renew(self.ctx.other_key, self.ctx.other_session)
        for switch_id in await self.engaged_switches():
            await self.admin("POST", f"/kill-switches/{switch_id}/release", {"reason": "fuzz batch over"})
        alive = await self.valid_call() and await self.ready()
        if not alive:
            self.liveness_failures += 1
        log, self.log_offset = self.read_new(self.gateway.log, self.log_offset)
        if "Exception Group Traceback" in log and "in lifespan" in log:
            # The runtime (snapshot, audit writer, upstreams) is gone while the process
            # still serves: what follows would test a corpse. Replay the batch to find the input.
            self.crashed = f"the gateway's runtime crashed in batch [{start}, {stop})"
        tracebacks = log.count("Traceback (most recent call last)")
        if tracebacks:
            self.tracebacks += tracebacks
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"traceback-{self.args.seed}-{start}-{stop}.log").write_text(log)
        bad = self.check_forwards()
        for item in bad:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"ungoverned-{self.args.seed}-{start}-{stop}.jsonl").open("a").write(json.dumps(item) + "\n")
        self.ungoverned.extend(bad)
        assert self.gateway.process is not None
        if self.gateway.process.poll() is not None:
            self.crashed = f"the gateway process exited in batch [{start}, {stop})"
        self.rss.append(rss_kib(self.gateway.process.pid))
        if self.args.smaps:
            self.save_smaps(number)
        last = stop >= self.args.inputs
        if self.gateway.trace is not None and (number % self.args.trace_every == 0 or number == 1 or last):
            await self.gateway.dump()  # after the RSS reading: a snapshot costs memory itself
        print(
            f"batch {number:3d} [{start}-{stop}) rss {self.rss[-1] // 1024} MiB, 500s {self.statuses[500]}, "
            f"tracebacks {tracebacks}, ungoverned {len(bad)}, alive {alive}",
            flush=True,
        )

    async def malloc_probe(self) -> None:
        """After the last batch (its RSS already read): how much of the RSS glibc holds free.
        gdb attaches to the gateway and calls `malloc_stats()` (it writes to the gateway's
        log) and then `malloc_trim(0)`; the RSS before and after the trim is printed."""
        assert self.gateway.process is not None
        pid = self.gateway.process.pid
        offset = self.gateway.log.stat().st_size
        before = rss_kib(pid)
        command = [
            "gdb",
            "-p",
            str(pid),
            "-batch",
            "-ex",
            "call (void)malloc_stats()",
            "-ex",
            "call (int)malloc_trim(0)",
        ]
        probe = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await asyncio.wait_for(probe.wait(), 120)
        after = rss_kib(pid)
        stats, _ = self.read_new(self.gateway.log, offset)
        total = stats.rpartition("Total (incl. mmap):")[2]
        system = re.search(r"system bytes\s*=\s*(\d+)", total)
        used = re.search(r"in use bytes\s*=\s*(\d+)", total)
        arenas = stats.count("Arena ")
        held = int(system.group(1)) // 2**20 if system else "?"
        in_use = int(used.group(1)) // 2**20 if used else "?"
        self.malloc_report = (
            f"malloc probe: RSS {before // 1024} MiB; glibc ({arenas} arenas) holds {held} MiB, {in_use} MiB "
            f"in use; after malloc_trim(0): RSS {after // 1024} MiB"
        )
        print(self.malloc_report, flush=True)

    def save_smaps(self, number: int) -> None:
        """Where the RSS is (main heap, glibc's per-thread arenas, files): cheap, untraced."""
        assert self.gateway.process is not None
        smaps = Path(self.args.smaps)
        smaps.mkdir(parents=True, exist_ok=True)
        data = Path(f"/proc/{self.gateway.process.pid}/smaps").read_bytes()
        (smaps / f"batch-{number:03d}.smaps").write_bytes(data)

    async def run(self) -> int:
        await self.setup()
        started = time.monotonic()
        try:
            if self.args.only is not None:
                item = make_input(self.args.seed, self.args.only, self.ctx)
                print(json.dumps(item.describe(), indent=1)[:5000])
                status, body = await http(
                    self.gateway.port,
                    item.method,
                    item.path,
                    item.headers,
                    item.body,
                    item.content_length,
                    timeout=self.args.timeout,
                )
                print(f"status {status}\n{body[:3000].decode('utf-8', 'replace')}")
                await self.after_batch(0, self.args.only, self.args.only + 1)
                return 0
            number, index = 0, 0
            while index < self.args.inputs and time.monotonic() - started < self.args.max_seconds:
                stop = min(index + self.args.batch, self.args.inputs)
                await self.batch(index, stop)
                number += 1
                await self.after_batch(number, index, stop)
                index = stop
                if self.crashed and not self.args.keep_going:
                    break
            if self.args.malloc_probe and not self.crashed:
                await self.malloc_probe()
        finally:
            elapsed = time.monotonic() - started
            self.gateway.stop()
        return self.summary(elapsed)

    def summary(self, elapsed: float) -> int:
        warm = self.rss[min(len(self.rss) - 1, max(1, len(self.rss) // 10))] if self.rss else 0
        end = self.rss[-1] if self.rss else 0
        growth = (end - warm) / warm * 100 if warm else 0.0
        print("\n== fuzz summary ==")
        sent = self.sent - sum(self.skipped.values())
        rate = sent / max(elapsed, 1e-9)
        print(f"seed {self.args.seed}; inputs sent {sent} of {self.sent} made, in {elapsed:.0f} s ({rate:.0f}/s)")
        if self.skipped:
            print("skipped as known breaks: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())))
        print("HTTP statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items())))
        print("JSON-RPC error codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.rpc_errors.items())))
        print(
            f"HTTP 500s: {self.statuses[500]}; JSON-RPC -32603: {self.rpc_errors[-32603]}; "
            f"tracebacks in the log: {self.tracebacks}"
        )
        print(f"ungoverned forwards: {len(self.ungoverned)}; failed liveness checks: {self.liveness_failures}")
        if self.crashed:
            print(f"CRASH: {self.crashed}")
        print(
            f"RSS: start {self.rss[0] // 1024 if self.rss else 0} MiB, after warm-up {warm // 1024} MiB, "
            f"end {end // 1024} MiB ({growth:+.1f}% since warm-up)"
        )
        if self.malloc_report:
            print(self.malloc_report)
        if self.findings or self.ungoverned or self.tracebacks:
            print(f"findings saved under {self.out}")
        failed = [self.crashed, self.statuses[500], self.tracebacks, self.ungoverned, self.liveness_failures]
        return 1 if any(failed) or growth >= 10 else 0


def _depth(data: bytes) -> int:
    deepest = depth = 0
    for byte in data:
        if byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


_HUGE = re.compile(r"^-?(nan|inf|\d*\.?\d+e\d+|\d{19,})$", re.I)


def known_break(item: Input) -> str:
    """Which break of issue 11 (open on this branch) an input would hit, if any: with
    `--skip-known` these are not sent, so the rest of the run measures what they would hide
    (one of them ends the gateway's runtime)."""
    if _depth(item.body) > 250:
        return "nesting deeper than 250 (break 11; kills the runtime on the parking path)"
    try:
        message = json.loads(item.body)
    except ValueError:
        message = None
    params = message.get("params") if isinstance(message, dict) else None
    if isinstance(message, dict) and isinstance(params, dict):
        method = message.get("method")
        if method == "notifications/cancelled" and isinstance(params.get("requestId"), list | dict):
            return "notifications/cancelled with a list or object requestId (break 11)"
        if method == "subscriptions/listen":
            wanted = params.get("notifications")
            subscriptions = wanted.get("resourceSubscriptions") if isinstance(wanted, dict) else None
            if subscriptions is not None and not (
                isinstance(subscriptions, list) and all(isinstance(u, str) for u in subscriptions)
            ):
                return "listen with malformed resourceSubscriptions (break 1)"
    if item.path.startswith("/admin/api/audit"):
        query = item.path.partition("?")[2]
        if any(_HUGE.match(part.partition("=")[2]) for part in query.split("&")):
            return "audit query with nan/inf/huge numbers (break 11)"
    if item.path.startswith("/admin/api/kill-switches") and isinstance(message, dict):
        expires = message.get("expires_in_seconds")
        if isinstance(expires, int | float) and not isinstance(expires, bool) and not 0 < expires < 1e12:
            return "kill switch with an unrepresentable expiry (new finding)"
    return ""


def targets_of(server: str, message: dict[str, Any]) -> list[tuple[Target, dict[str, Any] | None]]:
    """The policy targets an upstream request reaches."""
    method, params = message.get("method"), message.get("params")
    params = params if isinstance(params, dict) else {}
    if method == "tools/call":
        arguments = params.get("arguments")
        return [(Target(server, "tool", str(params.get("name"))), arguments if isinstance(arguments, dict) else {})]
    if method == "prompts/get":
        return [(Target(server, "prompt", str(params.get("name"))), None)]
    if method in ("resources/read", "resources/subscribe"):
        return [(Target(server, "resource", str(params.get("uri"))), None)]
    if method == "completion/complete":
        raw = params.get("ref")
        ref: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if ref.get("type") == "ref/prompt":
            return [(Target(server, "prompt", str(ref.get("name"))), None)]
        return [(Target(server, "resource", str(ref.get("uri"))), None)]
    if method == "subscriptions/listen":
        wanted = (params.get("notifications") or {}).get("resourceSubscriptions") or []
        return [(Target(server, "resource", str(uri)), None) for uri in wanted]
    return [(Target(server, "tool", f"<unexpected {method}>"), None)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for one answer")
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop sending after this long")
    parser.add_argument("--only", type=int, default=None, help="send only input N of the seed, then check")
    parser.add_argument("--work", default=f"/tmp/mcp-gateway-fuzz-{os.getpid()}", help="store, config and logs")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "findings"), help="saved findings")
    parser.add_argument("--skip-known", action="store_true", help="do not send inputs that hit known breaks")
    parser.add_argument("--skip-notes", default="", help="do not send inputs whose note matches this regex (bisecting)")
    parser.add_argument(
        "--trace-memory",
        default="",
        help="run the gateway under tracemalloc and dump snapshots (and smaps) into this directory "
        "after batch 1, every --trace-every batches and the last (compare them with fuzz/memdiff.py; "
        "RSS figures of such a run include tracemalloc's own overhead)",
    )
    parser.add_argument("--trace-every", type=int, default=5)
    parser.add_argument(
        "--malloc-probe",
        action="store_true",
        help="after the last batch, attach gdb to print glibc's malloc_stats and the RSS before/after malloc_trim(0)",
    )
    parser.add_argument(
        "--smaps", default="", help="save the gateway's /proc/PID/smaps after each batch in this directory"
    )
    parser.add_argument("--keep-going", action="store_true", help="go on after the gateway's runtime crashed")
    args = parser.parse_args()
    return asyncio.run(Harness(args).run())


if __name__ == "__main__":
    sys.exit(main())
