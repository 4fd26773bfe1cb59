"""The in-flight registry, in process: what a switch or a revocation ends among calls in
flight and what clients hold open."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mcp_gateway.identity import Principal
from mcp_gateway.killswitch import Ending, Inflight
from mcp_gateway.policy_model import KillSwitch, Target

pytestmark = pytest.mark.anyio

ADA = Principal("ops/ada", "ops", "ada", key_id="k1")
ADA_OTHER_KEY = Principal("ops/ada", "ops", "ada", key_id="k2")
BOB = Principal("dev/bob", "dev", "bob", key_id="k3")
ECHO = Target("files", "tool", "echo")


def _switch(scope: Any, target: str) -> KillSwitch:
    return KillSwitch(id=f"ks_{scope}", scope=scope, target=target, reason="r", actor="ops", created_at=0.0)


def _open(registry: Inflight, principal: Principal, kind: Any = "stream") -> list[Ending]:
    ended: list[Ending] = []
    registry.open(principal, kind, ended.append)
    return ended


@pytest.mark.parametrize(("scope", "target"), [("global", ""), ("team", "ops"), ("principal", "ops/ada")])
async def test_a_switch_that_stops_a_principal_ends_its_open_streams_only(scope: str, target: str) -> None:
    registry = Inflight()
    ada, bob = _open(registry, ADA), _open(registry, BOB)
    registry.kill([_switch(scope, target)])
    assert ada == ["killed"]
    assert bob == (["killed"] if scope == "global" else [])


@pytest.mark.parametrize(("scope", "target"), [("server", "files"), ("tool", "files/echo")])
async def test_a_server_or_tool_switch_leaves_streams_open(scope: str, target: str) -> None:
    registry = Inflight()
    ada = _open(registry, ADA)
    registry.kill([_switch(scope, target)])
    assert ada == []


async def test_revoking_a_key_ends_what_that_key_opened_and_its_calls_not_the_other_keys() -> None:
    registry = Inflight()
    revoked, other = _open(registry, ADA), _open(registry, ADA_OTHER_KEY)
    session = _open(registry, ADA, "session")
    call = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    flight = registry.add(ADA, ECHO)
    flight.task = call
    assert registry.revoke({"k1"}, set()) == 3
    assert revoked == ["revoked"] and session == ["revoked"] and other == []
    assert flight.killed_by is not None and flight.killed_by.id == "revoked:k1"
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_killed_session_is_reached_again_by_a_later_switch_and_by_revocation() -> None:
    registry = Inflight()
    session = _open(registry, ADA, "session")
    registry.kill([_switch("team", "ops")])
    registry.kill([_switch("principal", "ops/ada")])
    registry.revoke(set(), {"ops/ada"})
    assert session == ["killed", "killed", "revoked"]


async def test_streams_are_counted_per_principal_apart_from_calls() -> None:
    registry = Inflight()
    for _ in range(3):
        _open(registry, ADA)
    _open(registry, ADA, "session")
    _open(registry, BOB)
    assert registry.open_count("ops/ada") == 3 and registry.open_count() == 4
    assert len(registry) == 0
