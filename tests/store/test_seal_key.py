"""The key that seals request states is one per store, so any replica opens what another sealed."""

from __future__ import annotations

import pytest

from mcp_gateway.governance import Ticket
from mcp_gateway.identity import Principal
from mcp_gateway.policy_model import Decision, Target
from mcp_gateway.proxy.bridge import Seal
from mcp_gateway.store import open_engine, upgrade
from mcp_gateway.store import state as state_store

pytestmark = pytest.mark.anyio


async def test_every_replica_reads_the_same_seal_key_and_opens_what_another_sealed(store_url: str) -> None:
    first, second = open_engine(store_url), open_engine(store_url)
    try:
        await upgrade(first)
        key_a, key_b = await state_store.seal_key(first), await state_store.seal_key(second)
        assert key_a == key_b and len(key_a) == 32
        ticket = Ticket(
            "c0ffee",
            Principal("t/a", "t"),
            Target("s", "tool", "echo"),
            "tools/call",
            Decision("allow", "ok", "r", 1),
            0.0,
        )
        sealed = Seal(key_a).wrap({"step": 1}, ticket)
        opened = Seal(key_b).open(sealed)
        assert opened is not None and opened.state == {"step": 1} and opened.call_id == "c0ffee"
        assert Seal().open(sealed) is None  # a key of its own would not open it
    finally:
        await first.dispose()
        await second.dispose()
