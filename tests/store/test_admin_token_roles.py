"""Admin tokens as the store keeps them: tokens made before roles existed keep full rights
(migration 0005 makes them `admin`), and a role the gateway does not know grants nothing."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from mcp_gateway.policy.snapshot import build
from mcp_gateway.roles import Role
from mcp_gateway.store import open_engine, upgrade
from mcp_gateway.store.state import StateRows

from .test_migrations import _alembic

pytestmark = pytest.mark.anyio


async def test_a_token_made_before_roles_becomes_an_admin_token_on_upgrade(store_url: str) -> None:
    before = _alembic("upgrade", "0003", url=store_url)
    assert before.returncode == 0, before.stderr
    engine = open_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO admin_tokens (id, name, hash, created_at) VALUES ('t1', 'ops', :h, 1.0)"),
                {"h": "0" * 64},
            )
        await upgrade(engine)
        async with engine.connect() as conn:
            role = (await conn.execute(text("SELECT role FROM admin_tokens WHERE id = 't1'"))).scalar_one()
    finally:
        await engine.dispose()
    assert role == "admin"


def test_a_token_with_a_role_this_version_does_not_know_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    rows = StateRows(
        version=1,
        policy_version=1,
        principals=[],
        keys=[],
        admin_tokens=[
            {"id": "a", "hash": "1" * 64, "name": "known", "role": "operator"},
            {"id": "b", "hash": "2" * 64, "name": "odd", "role": "root"},
        ],
        rules=[],
        switches=[],
    )
    with caplog.at_level(logging.WARNING):
        snapshot = build(rows)
    assert {k: (v.name, v.role) for k, v in snapshot.admin_tokens.items()} == {"a": ("known", Role.operator)}
    assert "unknown role 'root'" in caplog.text
