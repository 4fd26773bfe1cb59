"""The property tests' rig: one real gateway (uvicorn on loopback, `auth: keys`) in front
of two recording upstreams, `alpha` (handshake era) and `beta` (2026-07-28), both stdio
processes of `recording_server.py`. Started once per module; each example swaps the
policy and kill switches through the store and waits for the snapshot to carry them.

The oracle is the engine's pure `decide()` over the same `Rule` and `KillSwitch` values
the example wrote; what reached an upstream is read back from the recorders' logs.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from sqlalchemy import func, select

from mcp_gateway.admin.identity import make_key
from mcp_gateway.identity import Principal
from mcp_gateway.policy.engine import PolicyState, decide
from mcp_gateway.policy.snapshot import switch_of
from mcp_gateway.policy_model import Decision, KillSwitch, Rule, Target
from mcp_gateway.runtime import Gateway
from mcp_gateway.store import identity as identity_store
from mcp_gateway.store import rules as rule_store
from mcp_gateway.store import switches as switch_store
from mcp_gateway.store import tables

from ..support import serve, wait_ready, write_config

RECORDING_SERVER = Path(__file__).resolve().parent / "recording_server.py"
MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ERAS = (HANDSHAKE, MODERN)
SERVERS = {"alpha": "handshake", "beta": MODERN}
TEAMS = ("red", "green", "blue")
PRINCIPALS = (("red", "ann"), ("red", "bob"), ("green", "cat"), ("blue", "dan"))
ROOT = ("root", "ops")
"""A principal allowed everything, used only to make upstream events happen (`poke`)."""
DENIED = -32050
HOUSEKEEPING = frozenset(
    {
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
    }
)
"""What the gateway sends upstream on its own account (connecting, reading catalogs,
ending the listen stream it replaces when a 2026-07-28 upstream's subscriptions change)."""


def recording_upstream(log: Path, era: str) -> dict[str, Any]:
    return {
        "command": sys.executable,
        "args": [str(RECORDING_SERVER)],
        "env": {"RECORDER_LOG": str(log), "RECORDER_ERA": era},
        "timeout": 30,
    }


@dataclass
class Agent:
    principal: Principal
    key: str
    session: str = ""
    """The handshake-era session this agent keeps for the whole module."""


class Rig:
    """The running gateway, its recorders' logs, and one agent per principal."""

    def __init__(
        self,
        url: str,
        gateway: Gateway,
        http: httpx2.AsyncClient,
        logs: dict[str, Path],
        agents: list[Agent],
        root: Agent,
    ) -> None:
        self.url, self.gateway, self.http, self.logs = url, gateway, http, logs
        self.agents, self.root = agents, root
        self.offsets: dict[str, int] = {}
        self.rules: tuple[Rule, ...] = ()
        self.switches: tuple[KillSwitch, ...] = ()
        self.bundle = 0
        self.subscribed: dict[str, set[str]] = {name: set() for name in SERVERS}
        """What each upstream is subscribed to, followed from what it received."""

    def __repr__(self) -> str:
        return f"Rig({self.url})"

    # -- policy ----------------------------------------------------------------------------

    async def apply(self, rules: Sequence[Rule], switches: Sequence[tuple[str, str]]) -> None:
        """Make `rules` (plus root's allow-all) and `switches` the live policy, and wait for
        the gateway's snapshot to carry them."""
        engine = self.gateway.engine
        self.bundle += 1
        every = [*rules, Rule(id="root-all", team=ROOT[0], effect="allow", servers=("*",))]
        await rule_store.replace_all(
            engine, every, "props", content_hash=f"props-{self.bundle}", git_commit=None, git_dirty=None
        )
        for engaged in await switch_store.listing(engine):
            await switch_store.release(engine, engaged["id"], "props", "next example")
        made = []
        for scope, target in switches:
            row = await switch_store.engage(engine, scope, target, "props", "property test", None)
            made.append(switch_of(row))
        assert await self.gateway.snapshots.refresh(force=True)
        self.rules, self.switches = tuple(every), tuple(made)

    def oracle(self) -> PolicyState:
        return PolicyState.build(self.rules, self.switches)

    def expect(self, principal: Principal, target: Target, arguments: dict[str, Any] | None = None) -> Decision:
        """The oracle's verdict, checked against the verdict of the gateway's own snapshot
        (a difference means the store or the snapshot changed the rules on the way)."""
        now = time.time()
        mine = decide(self.oracle(), principal, target, now, arguments=arguments)
        live = decide(self.gateway.snapshots.current.policy, principal, target, now, arguments=arguments)
        assert mine.effect == live.effect, f"the live snapshot decides {live} where the rules say {mine}"
        return mine

    # -- what reached the upstreams -----------------------------------------------------------

    def mark(self) -> None:
        self.offsets = {name: path.stat().st_size if path.exists() else 0 for name, path in self.logs.items()}

    def received(self) -> dict[str, list[dict[str, Any]]]:
        """What each upstream received since `mark`, leaving out the gateway's housekeeping."""
        out: dict[str, list[dict[str, Any]]] = {}
        for name, path in self.logs.items():
            with path.open("rb") as log:
                log.seek(self.offsets.get(name, 0))
                lines = log.read().decode().splitlines()
            messages = [json.loads(line) for line in lines if line.strip()]
            out[name] = [m for m in messages if not (isinstance(m, dict) and m.get("method") in HOUSEKEEPING)]
        self.mark()
        return out

    async def audit_mark(self) -> int:
        async with self.gateway.engine.connect() as conn:
            return int((await conn.execute(select(func.coalesce(func.max(tables.audit.c.seq), 0)))).scalar_one())

    async def audit_since(self, seq: int) -> list[dict[str, Any]]:
        # Decision rows are committed before the answer; completions are queued: flush them.
        async with self.gateway.engine.connect() as conn:
            rows = await conn.execute(select(tables.audit).where(tables.audit.c.seq > seq).order_by(tables.audit.c.seq))
            return [dict(r._mapping) for r in rows]

    # -- requests ---------------------------------------------------------------------------------

    def headers(self, agent: Agent, era: str, method: str, params: dict[str, Any]) -> dict[str, str]:
        headers = {
            "authorization": f"Bearer {agent.key}",
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        }
        if era == MODERN:
            headers["mcp-protocol-version"] = MODERN
            headers["mcp-method"] = method
            name = params.get("uri" if method == "resources/read" else "name")
            if method in ("tools/call", "prompts/get", "resources/read") and isinstance(name, str):
                headers["mcp-name"] = name
        else:
            headers["mcp-protocol-version"] = HANDSHAKE
            if agent.session:
                headers["mcp-session-id"] = agent.session
        return headers

    async def rpc(
        self, agent: Agent, era: str, method: str, params: dict[str, Any], caps: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One request; returns the JSON-RPC response (the HTTP status under `_status`)."""
        body = dict(params)
        if era == MODERN:
            body["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": caps or {},
            }
        message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": body}
        response = await self.http.post("/mcp", json=message, headers=self.headers(agent, era, method, params))
        answer = parse_answer(response.text)
        answer["_status"] = response.status_code
        return answer

    @asynccontextmanager
    async def stream(self, agent: Agent, method: str, params: dict[str, Any]) -> AsyncIterator[Any]:
        """A 2026-07-28 streaming request (a listen); yields the response's SSE messages."""
        body = {
            **params,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        }
        message = {"jsonrpc": "2.0", "id": 7, "method": method, "params": body}
        headers = self.headers(agent, MODERN, method, params)
        async with self.http.stream("POST", "/mcp", json=message, headers=headers) as response:
            yield response, sse_messages(response)


def parse_answer(text: str) -> dict[str, Any]:
    """A JSON answer, or the last response in an SSE answer."""
    text = text.strip()
    if text.startswith("{"):
        parsed: dict[str, Any] = json.loads(text)
        return parsed
    found: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip():  # not a priming event
            message = json.loads(line[5:])
            if isinstance(message, dict) and ("result" in message or "error" in message):
                found = message
    return found


async def sse_messages(response: Any) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data:") and line[5:].strip():  # not a priming event
            yield json.loads(line[5:])


@asynccontextmanager
async def running_rig(directory: Path) -> AsyncIterator[Rig]:
    logs = {name: directory / f"{name}.log" for name in SERVERS}
    upstreams = {name: recording_upstream(logs[name], era) for name, era in SERVERS.items()}
    config = write_config(directory, upstreams, auth="keys", policies=None)
    async with serve(config) as (url, gateway):
        await wait_ready(gateway)
        engine = gateway.engine
        for team in (*TEAMS, ROOT[0]):
            await identity_store.ensure_team(engine, team)
        agents = []
        for team, name in (*PRINCIPALS, ROOT):
            made = await make_key(engine, team, name, "agent")
            agents.append(Agent(Principal(id=made["principal"], team=team, name=name, kind="agent"), made["key"]))
        assert await gateway.snapshots.refresh(force=True)
        async with httpx2.AsyncClient(base_url=url.rsplit("/mcp", 1)[0], timeout=30) as http:
            rig = Rig(url, gateway, http, logs, agents[:-1], agents[-1])
            for agent in agents:
                response = await http.post(
                    "/mcp",
                    json={
                        "jsonrpc": "2.0",
                        "id": 0,
                        "method": "initialize",
                        "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "props"}},
                    },
                    headers=rig.headers(agent, HANDSHAKE, "initialize", {}),
                )
                assert response.status_code == 200, response.text
                agent.session = response.headers["mcp-session-id"]
                await http.post(
                    "/mcp",
                    json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                    headers=rig.headers(agent, HANDSHAKE, "notifications/initialized", {}),
                )
            rig.mark()
            yield rig
