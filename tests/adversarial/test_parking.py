"""Issue 11, break 3 (and the parked-call cap of break 7): a call that a 2026-07-28 client
makes to a handshake-era upstream, parked while the upstream waits for the client's input,
stays governed between its legs.

The upstream is the real everything server over stdio (`protocol: handshake`), behind a
wiretap that records every line the gateway sends it, so a test sees the cancellation
arrive. The client is raw 2026-07-28 POSTs, so every answer is seen as it came.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_gateway.errors import GATEWAY_DENIED
from mcp_gateway.protocol import INVALID_PARAMS
from mcp_gateway.proxy import bridge
from mcp_gateway.runtime import Gateway

from ..support import EVERYTHING, admin_client, create_key, serve, wait_ready, write_config, write_policies

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
ADMIN = "parking-admin-token"
WIRETAP = Path(__file__).resolve().parent.parent / "upstreams" / "wiretap.py"
POLICY = {
    "teams": {
        "ops": {"rules": [{"id": "ops-all", "allow": {"servers": ["*"]}}]},
        "dev": {"rules": [{"id": "dev-all", "allow": {"servers": ["*"]}}]},
    }
}
PRINCIPALS = [("ops", "alice"), ("ops", "bob"), ("dev", "carol")]
ANSWER = {"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}
ANSWERED = 'User response: action=accept, content={"username":"ada","email":"ada@example.com"}'
SWITCHES = {
    "tool": {"scope": "tool", "server": "b", "tool": "test_elicitation"},
    "server": {"scope": "server", "server": "b"},
    "team": {"scope": "team", "team": "ops"},
    "principal": {"scope": "principal", "principal": "ops/alice"},
    "global": {"scope": "global"},
}
WITHIN = 20.0


def tapped_upstream(wire: Path, protocol: str = "handshake") -> dict[str, Any]:
    return {
        "command": "python",
        "args": [str(WIRETAP), str(EVERYTHING)],
        "env": {"WIRETAP_LOG": str(wire)},
        "protocol": protocol,
    }


@dataclass
class Deployment:
    url: str
    gateway: Gateway
    wires: dict[str, Path]
    """What each upstream received, by upstream name."""
    keys: dict[str, str]
    """API key by principal id."""
    policies: Path


@asynccontextmanager
async def _deploy(
    directory: Path, servers: tuple[str, ...] = ("b",), modern: tuple[str, ...] = (), **gateway: Any
) -> AsyncIterator[Deployment]:
    """The gateway in front of wiretapped everything servers: handshake-era ones named by
    `servers`, 2026-07-28 ones by `modern`."""
    wires = {name: directory / f"{name}.wire.log" for name in servers + modern}
    for wire in wires.values():
        wire.touch()
    write_policies(directory / "policies", POLICY)
    (directory / "admin-token").write_text(ADMIN)
    token = {"$file": str(directory / "admin-token")}
    config = write_config(
        directory,
        {name: tapped_upstream(wire, "modern" if name in modern else "handshake") for name, wire in wires.items()},
        auth="keys",
        policies="policies",
        admin_token=token,
        **gateway,
    )
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        keys = {f"{team}/{name}": await create_key(url, team, name, ADMIN) for team, name in PRINCIPALS}
        yield Deployment(url, gw, wires, keys, directory / "policies")


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    async with _deploy(tmp_path_factory.mktemp("parking"), ("b",), ("m",)) as deployed:
        yield deployed


# -- a 2026-07-28 client, as raw POSTs --------------------------------------------------------


class Agent:
    """A 2026-07-28 client that declares elicitation; `call` returns the JSON-RPC response."""

    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url
        self._ids = iter(range(1, 1_000_000))
        self._asked: dict[str, list[str]] = {}
        """The keys of the input requests each requestState came with: a retry answers them."""

    async def call(
        self, name: str, arguments: dict[str, Any], state: str | None = None, answers: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        }
        params: dict[str, Any] = {"name": name, "arguments": arguments, "_meta": meta}
        if state is not None:
            params["requestState"] = state
            keys = self._asked.get(state, ["r1"])
            params["inputResponses"] = answers if answers is not None else dict.fromkeys(keys, ANSWER)
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "mcp-protocol-version": MODERN,
            "mcp-method": "tools/call",
            "mcp-name": name,
        }
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/call", "params": params}
        with anyio.fail_after(WITHIN):
            response = await self._http.post(self._url, content=json.dumps(body), headers=headers)
        messages = _messages(response)
        assert messages, (response.status_code, response.text)
        result = messages[-1].get("result") or {}
        if result.get("resultType") == "input_required":
            self._asked[result["requestState"]] = list(result["inputRequests"])
        return messages[-1]


def _messages(response: httpx2.Response) -> list[dict[str, Any]]:
    if response.headers.get("content-type", "").startswith("application/json"):
        return [response.json()]
    frames = []
    for event in response.text.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
        if data:
            frames.append(json.loads(data))
    return frames


@asynccontextmanager
async def agent(deployment: Deployment, principal: str) -> AsyncIterator[Agent]:
    headers = {"authorization": f"Bearer {deployment.keys[principal]}"}
    async with httpx2.AsyncClient(headers=headers, timeout=WITHIN) as http:
        yield Agent(http, deployment.url)


def parked_state(reply: dict[str, Any]) -> str:
    """The requestState of an `input_required` answer that asks for one elicitation."""
    result = reply.get("result")
    assert isinstance(result, dict) and result.get("resultType") == "input_required", reply
    assert [r["method"] for r in result["inputRequests"].values()] == ["elicitation/create"], result
    state = result["requestState"]
    assert isinstance(state, str)
    return state


def text_of(reply: dict[str, Any]) -> str:
    result = reply.get("result")
    assert isinstance(result, dict) and result.get("resultType") == "complete", reply
    return str(result["content"][0]["text"])


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    assert "error" in reply, reply
    return reply["error"]  # type: ignore[no-any-return]


def marker(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


# -- what reached the upstream, and what the audit says -------------------------------------------


def _wire(deployment: Deployment, server: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in deployment.wires[server].read_text().splitlines() if line.strip()]


async def _poll(probe: Callable[[], Any], what: str) -> Any:
    """Wait for `probe()` to return something truthy (a file or the audit is looked at again)."""
    with anyio.fail_after(WITHIN):
        while not (found := probe()):
            await anyio.sleep(0.05)
    assert found, what
    return found


async def upstream_request(deployment: Deployment, text: str, server: str = "b") -> Any:
    """The id of the `tools/call` the upstream received carrying `text`."""

    def probe() -> Any:
        for m in _wire(deployment, server):
            if m.get("method") == "tools/call" and m["params"].get("arguments", {}).get("message") == text:
                return m["id"]
        return None

    return await _poll(probe, f"the upstream never received the call {text}")


def cancelled_upstream(deployment: Deployment, request_id: Any, server: str = "b") -> bool:
    return any(
        m.get("method") == "notifications/cancelled" and m["params"].get("requestId") == request_id
        for m in _wire(deployment, server)
    )


async def call_rows(
    deployment: Deployment, principal: str, text: str, ready: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The audit rows of the call whose first leg carried `text`, oldest first, once `ready`."""
    async with admin_client(deployment.url, ADMIN) as admin:

        async def fetch() -> list[dict[str, Any]]:
            page = await admin.get("/audit", params={"principal": principal, "limit": 1000})
            assert page.status_code == 200, page.text
            rows: list[dict[str, Any]] = page.json()["items"]
            first = [r for r in rows if r["kind"] == "decision" and text in (r["arguments"] or "")]
            if not first:
                return []
            return sorted((r for r in rows if r["call_id"] == first[0]["call_id"]), key=lambda r: r["seq"])

        with anyio.fail_after(WITHIN):
            while not ready(rows := await fetch()):
                await anyio.sleep(0.05)
        return rows


def legs(rows: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """Each row as (kind, tool, decision or outcome)."""
    return [(r["kind"], r["tool"], r["outcome"] if r["kind"] == "completion" else r["decision"]) for r in rows]


# -- the kill switch reaches a parked call ---------------------------------------------------------


@pytest.mark.parametrize("scope", list(SWITCHES))
async def test_a_kill_switch_ends_a_parked_call_at_once_and_its_resume_gets_the_kill_error(
    deployment: Deployment, scope: str
) -> None:
    text = marker(f"kill-{scope}")
    async with agent(deployment, "ops/alice") as alice, admin_client(deployment.url, ADMIN) as admin:
        state = parked_state(await alice.call("b__test_elicitation", {"message": text}))
        request_id = await upstream_request(deployment, text)
        engaged = await admin.post("/kill-switches", json={**SWITCHES[scope], "reason": "incident 11"})
        assert engaged.status_code == 201, engaged.text
        switch = engaged.json()["id"]
        try:
            await _poll(lambda: cancelled_upstream(deployment, request_id), "the upstream never saw the cancellation")
            rows = await call_rows(deployment, "ops/alice", text, lambda rows: len(rows) >= 3)
            assert legs(rows) == [
                ("decision", "test_elicitation", "allow"),
                ("completion", "test_elicitation", "input_required"),
                ("completion", "test_elicitation", "killed"),
            ]
            assert rows[-1]["detail"] == switch
            denied = error_of(await alice.call("b__test_elicitation", {"message": text}, state))
            assert denied["code"] == GATEWAY_DENIED and denied["data"]["kill_switch_id"] == switch
        finally:
            released = await admin.post(f"/kill-switches/{switch}/release", json={"reason": "resolved"})
            assert released.status_code == 200, released.text
        # Released: the call it ended stays ended; its answer is the kill, never the result.
        ended = error_of(await alice.call("b__test_elicitation", {"message": text}, state))
        assert ended["code"] == GATEWAY_DENIED
        assert ended["data"]["reason"] == "kill_switch" and ended["data"]["kill_switch_id"] == switch


# -- a resume is the same call: same tool, same principal, decided again -----------------------------


async def test_a_parked_call_resumed_through_another_tool_is_refused_and_survives(deployment: Deployment) -> None:
    text = marker("other-tool")
    async with agent(deployment, "ops/alice") as alice:
        state = parked_state(await alice.call("b__test_elicitation", {"message": text}))
        refused = error_of(await alice.call("b__echo", {"text": "hi"}, state))
        assert refused["code"] == INVALID_PARAMS and "another tool" in refused["message"]
        assert text_of(await alice.call("b__test_elicitation", {"message": text}, state)) == ANSWERED


async def test_another_principals_resume_neither_completes_nor_destroys_a_parked_call(
    deployment: Deployment,
) -> None:
    text = marker("other-principal")
    async with agent(deployment, "ops/alice") as alice, agent(deployment, "ops/bob") as bob:
        state = parked_state(await alice.call("b__test_elicitation", {"message": text}))
        refused = error_of(await bob.call("b__test_elicitation", {"message": text}, state))
        assert refused["code"] == INVALID_PARAMS and "unknown or expired" in refused["message"]
        malformed = error_of(await alice.call("b__test_elicitation", {"message": text}, state, answers=[]))  # type: ignore[arg-type]
        assert malformed["code"] == INVALID_PARAMS
        assert text_of(await alice.call("b__test_elicitation", {"message": text}, state)) == ANSWERED


async def test_every_leg_of_a_parked_call_is_audited_under_one_call_id(deployment: Deployment) -> None:
    text = marker("one-id")
    async with agent(deployment, "ops/alice") as alice:
        state = parked_state(await alice.call("b__test_elicitation", {"message": text}))
        assert text_of(await alice.call("b__test_elicitation", {"message": text}, state)) == ANSWERED
    rows = await call_rows(deployment, "ops/alice", text, lambda rows: len(rows) >= 4)
    assert legs(rows) == [
        ("decision", "test_elicitation", "allow"),
        ("completion", "test_elicitation", "input_required"),
        ("decision", "test_elicitation", "allow"),
        ("completion", "test_elicitation", "ok"),
    ]


async def test_a_resume_denied_by_a_policy_change_is_audited_as_a_leg_of_the_call(deployment: Deployment) -> None:
    text = marker("policy-change")
    deny = {"id": "no-elicitation", "deny": {"servers": ["b"], "tools": ["test_elicitation"]}}
    stricter = {"teams": {**POLICY["teams"], "ops": {"rules": [deny, *POLICY["teams"]["ops"]["rules"]]}}}
    async with agent(deployment, "ops/alice") as alice, admin_client(deployment.url, ADMIN) as admin:
        state = parked_state(await alice.call("b__test_elicitation", {"message": text}))
        write_policies(deployment.policies, stricter)
        try:
            applied = await admin.post("/policy/reload")
            assert applied.status_code == 200 and applied.json()["applied"], applied.text
            denied = error_of(await alice.call("b__test_elicitation", {"message": text}, state))
        finally:
            write_policies(deployment.policies, POLICY)
            restored = await admin.post("/policy/reload")
            assert restored.status_code == 200, restored.text
        assert denied["code"] == GATEWAY_DENIED and denied["data"]["rule_id"] == "no-elicitation"
    rows = await call_rows(deployment, "ops/alice", text, lambda rows: len(rows) >= 3)
    assert legs(rows)[:3] == [
        ("decision", "test_elicitation", "allow"),
        ("completion", "test_elicitation", "input_required"),
        ("decision", "test_elicitation", "deny"),
    ]


async def test_a_parked_call_nobody_resumes_ends_in_time_and_the_upstream_is_told(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge, "PARK_SECONDS", 0.5)
    text = marker("expiry")
    async with agent(deployment, "ops/alice") as alice:
        state = parked_state(await alice.call("b__test_elicitation", {"message": text}))
        request_id = await upstream_request(deployment, text)
        await _poll(lambda: cancelled_upstream(deployment, request_id), "the expired call was left running")
        rows = await call_rows(deployment, "ops/alice", text, lambda rows: len(rows) >= 3)
        assert legs(rows) == [
            ("decision", "test_elicitation", "allow"),
            ("completion", "test_elicitation", "input_required"),
            ("completion", "test_elicitation", "cancelled"),
        ]
        expired = error_of(await alice.call("b__test_elicitation", {"message": text}, state))
        assert expired["code"] == INVALID_PARAMS and "expired" in expired["message"]


async def test_a_passed_through_request_state_is_bound_to_its_principal_tool_and_call(
    deployment: Deployment,
) -> None:
    text = marker("sealed")
    async with agent(deployment, "ops/alice") as alice, agent(deployment, "ops/bob") as bob:
        first = await alice.call("m__test_elicitation", {"message": text})
        state, answers = parked_state(first), dict.fromkeys(first["result"]["inputRequests"], ANSWER)
        # The upstream cannot tell the gateway's principals apart: the gateway must.
        other_principal = error_of(await bob.call("m__test_elicitation", {"message": text}, state, answers))
        assert other_principal["code"] == INVALID_PARAMS
        other_tool = error_of(await alice.call("m__echo", {"text": "hi"}, state))
        assert other_tool["code"] == INVALID_PARAMS and "another tool" in other_tool["message"]
        forged = state[:-1] + ("A" if state[-1] != "A" else "B")
        tampered = error_of(await alice.call("m__test_elicitation", {"message": text}, forged))
        assert tampered["code"] == INVALID_PARAMS
        assert text_of(await alice.call("m__test_elicitation", {"message": text}, state)) == ANSWERED
    rows = await call_rows(deployment, "ops/alice", text, lambda rows: len(rows) >= 4)
    assert legs(rows) == [
        ("decision", "test_elicitation", "allow"),
        ("completion", "test_elicitation", "input_required"),
        ("decision", "test_elicitation", "allow"),
        ("completion", "test_elicitation", "ok"),
    ]


# -- one principal's parked calls are bounded -------------------------------------------------------


async def test_a_principal_at_its_parked_call_cap_is_refused_and_others_are_not(tmp_path: Path) -> None:
    # One upstream per parked call: over stdio, a request from the upstream can be told
    # apart only while its call is the one in flight.
    async with (
        _deploy(tmp_path, ("b", "c", "d"), max_parked_calls_per_principal=2) as deployed,
        agent(deployed, "ops/alice") as alice,
        agent(deployed, "ops/bob") as bob,
    ):
        first, second, third = marker("cap-1"), marker("cap-2"), marker("cap-3")
        state_b = parked_state(await alice.call("b__test_elicitation", {"message": first}))
        state_c = parked_state(await alice.call("c__test_elicitation", {"message": second}))
        refused = error_of(await alice.call("d__test_elicitation", {"message": third}))
        assert refused["code"] == GATEWAY_DENIED and refused["data"]["reason"] == "parked_call_limit"
        assert "max_parked_calls_per_principal" in refused["message"]
        # The refused call went no further: the upstream was told, the audit says why.
        request_id = await upstream_request(deployed, third, "d")
        await _poll(lambda: cancelled_upstream(deployed, request_id, "d"), "the refused call was left running")
        rows = await call_rows(deployed, "ops/alice", third, lambda rows: len(rows) >= 2)
        assert legs(rows) == [
            ("decision", "test_elicitation", "allow"),
            ("completion", "test_elicitation", "refused"),
        ]
        # Another principal parks as before; calls that do not park are not limited.
        other = marker("cap-bob")
        state_d = parked_state(await bob.call("d__test_elicitation", {"message": other}))
        assert text_of(await alice.call("b__echo", {"text": "still served"})) == "still served"
        # A finished call frees its place.
        assert text_of(await alice.call("b__test_elicitation", {"message": first}, state_b)) == ANSWERED
        again = parked_state(await alice.call("b__test_elicitation", {"message": marker("cap-again")}))
        assert text_of(await alice.call("b__test_elicitation", {"message": first}, again)) == ANSWERED
        assert text_of(await alice.call("c__test_elicitation", {"message": second}, state_c)) == ANSWERED
        assert text_of(await bob.call("d__test_elicitation", {"message": other}, state_d)) == ANSWERED
