"""A bundle is applied again when the store no longer says what it says, even with the
same content hash: after migration 0002 turned a stored `["*"]` into "not named", the
files get their explicit `prompts: ["*"]` back on the next start, not never."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from mcp_gateway.policy import bundle as policy_bundle
from mcp_gateway.policy.apply import apply
from mcp_gateway.store import open_engine, upgrade
from mcp_gateway.store import rules as rule_store
from mcp_gateway.store import tables as t

pytestmark = pytest.mark.anyio


async def test_a_bundle_whose_stored_rules_drifted_is_applied_again(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "teams: {platform: {rules: [{id: docs, allow: {servers: [docs], tools: [read], prompts: ['*']}}]}}\n"
    )
    bundle = policy_bundle.load(tmp_path)
    engine = open_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        await upgrade(engine)
        first = await apply(engine, bundle, tmp_path, "test")
        assert first is not None
        assert await apply(engine, bundle, tmp_path, "test") is None, "same content, same rules: nothing to do"
        # What migration 0002 does to a stored `["*"]`.
        async with engine.begin() as conn:
            await conn.execute(update(t.rules).values(prompts=None))
        again = await apply(engine, bundle, tmp_path, "test")
        assert again is not None and again > first
        (rule,) = await rule_store.list_rules(engine)
        assert (rule.tools, rule.prompts, rule.resources) == (("read",), ("*",), None)
    finally:
        await engine.dispose()
