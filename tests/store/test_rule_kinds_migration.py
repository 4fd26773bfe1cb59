"""Migration 0002: rules stored before issue 11 (every kind set, `["*"]` where the file
left a kind out) are read as they were written: a kind stored as exactly `["*"]` is no
longer named, so a rule that named only tools stops granting prompts and resources, and
one that named nothing still covers everything. Downgrading keeps each rule's meaning."""

from __future__ import annotations

import time

import pytest
from alembic import command
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from mcp_gateway.store import open_engine
from mcp_gateway.store import rules as rule_store
from mcp_gateway.store import tables as t
from mcp_gateway.store.engine import alembic_config

pytestmark = pytest.mark.anyio

OLD_ROWS = [
    # (id, tools, prompts, resources) as the code before issue 11 stored them
    ("everything", '["*"]', '["*"]', '["*"]'),
    ("tools-only", '["read_*"]', '["*"]', '["*"]'),
    ("named-all", '["none"]', '["greet_*"]', '["file:///srv/public/*"]'),
    ("prompts-only", '["*"]', '["greet_*"]', '["*"]'),
]


def _to(revision: str, direction: str = "upgrade"):  # type: ignore[no-untyped-def]
    def run(connection: Connection) -> None:
        getattr(command, direction)(alembic_config(connection), revision)

    return run


async def test_old_rules_keep_what_they_named_and_lose_the_defaulted_star(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to("0001"))
            for position, (rule_id, tools, prompts, resources) in enumerate(OLD_ROWS, 1):
                await conn.execute(
                    insert(t.rules).values(
                        id=rule_id, team_id="platform", position=position, effect="allow", servers='["docs"]',
                        tools=tools, prompts=prompts, resources=resources, arguments=None, shadow=False,
                        description="", source="bundle", created_at=time.time(),
                    )
                )  # fmt: skip
        async with engine.begin() as conn:
            await conn.run_sync(_to("head"))
        rules = {r.id: r for r in await rule_store.list_rules(engine)}
        assert (rules["everything"].tools, rules["everything"].prompts, rules["everything"].resources) == (
            None, None, None,
        )  # fmt: skip
        assert not rules["everything"].names_a_kind
        assert (rules["tools-only"].tools, rules["tools-only"].prompts, rules["tools-only"].resources) == (
            ("read_*",), None, None,
        )  # fmt: skip
        assert rules["tools-only"].patterns("prompt") == ()
        named = rules["named-all"]
        assert (named.tools, named.prompts, named.resources) == (("none",), ("greet_*",), ("file:///srv/public/*",))
        assert (rules["prompts-only"].tools, rules["prompts-only"].prompts) == (None, ("greet_*",))

        async with engine.begin() as conn:
            await conn.run_sync(_to("0001", "downgrade"))
            rows = {r.id: r for r in await conn.execute(select(t.rules))}
        assert (rows["everything"].tools, rows["everything"].prompts) == ('["*"]', '["*"]')
        # Left out beside a named kind: matches nothing under the old reading, as it did after the upgrade.
        assert (rows["tools-only"].tools, rows["tools-only"].prompts, rows["tools-only"].resources) == (
            '["read_*"]', "[]", "[]",
        )  # fmt: skip
    finally:
        await engine.dispose()
