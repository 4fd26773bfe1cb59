"""The seal on a 2026-07-28 upstream's `requestState`: a retry gets the upstream's state
back only unchanged, from the principal and for the target it was issued to."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_gateway.errors import ProtocolError
from mcp_gateway.governance import Ticket
from mcp_gateway.identity import Principal
from mcp_gateway.policy_model import Decision, Target
from mcp_gateway.protocol import INVALID_PARAMS
from mcp_gateway.proxy.bridge import Seal

ALICE, BOB = Principal("ops/alice", "ops"), Principal("ops/bob", "ops")
ASK, ECHO = Target("m", "tool", "ask"), Target("m", "tool", "echo")
UPSTREAM_STATE = {"opaque": ["to", "the", "gateway"]}


def ticket(principal: Principal, target: Target, call_id: str = "c0ffee") -> Ticket:
    return Ticket(call_id, principal, target, "tools/call", Decision("allow", "ok", "r", 1), 0.0)


def retry(state: Any) -> dict[str, Any]:
    return {"name": "m__ask", "requestState": state, "inputResponses": {}}


def test_the_issuing_principal_gets_the_upstreams_state_back_for_the_same_target() -> None:
    seal = Seal()
    sealed = seal.wrap(UPSTREAM_STATE, ticket(ALICE, ASK))
    assert seal.unseal(retry(sealed), ticket(ALICE, ASK))["requestState"] == UPSTREAM_STATE
    opened = seal.open(sealed)
    assert opened is not None and opened.call_id == "c0ffee"


@pytest.mark.parametrize(
    "who, target, change, message",
    [
        (BOB, ASK, None, "unknown or expired"),
        (ALICE, ECHO, None, "another tool"),
        (ALICE, ASK, "payload", "unknown or expired"),
        (ALICE, ASK, "mac", "unknown or expired"),
        (ALICE, ASK, "key", "unknown or expired"),
    ],
)
def test_a_state_replayed_elsewhere_or_changed_is_refused(
    who: Principal, target: Target, change: str | None, message: str
) -> None:
    seal = Seal()
    sealed = seal.wrap(UPSTREAM_STATE, ticket(ALICE, ASK))
    payload, mac = sealed.split(".")
    if change == "payload":
        sealed = f"{payload[:-2]}{'AB' if payload[-2:] != 'AB' else 'CD'}.{mac}"
    elif change == "mac":
        sealed = f"{payload}.{mac[::-1]}"
    elif change == "key":
        seal = Seal()  # another process
    with pytest.raises(ProtocolError) as refused:
        seal.unseal(retry(sealed), ticket(who, target))
    assert refused.value.code == INVALID_PARAMS and message in refused.value.message
