"""The README's recipe for a PostgreSQL `audit` table partitioned by month works with the
gateway as it is: the writer appends, `audit verify` walks, `audit prune` cuts, and an
emptied month's partition can be dropped, every chain still verifying."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from mcp_gateway.audit.retention import prune
from mcp_gateway.audit.verify import verify
from mcp_gateway.store import open_engine, upgrade

from ..stores import postgres_database
from .common import rows_of, write_chain

pytestmark = pytest.mark.anyio

README = Path(__file__).resolve().parents[2] / "README.md"
NOV, DEC = 1793491200.0, 1796083200.0  # 2026-11-01, 2026-12-01 UTC


def _recipe() -> list[str]:
    text = README.read_text()
    block = re.search(r"```sql\n(ALTER TABLE audit RENAME TO audit_old;.*?)```", text, re.S)
    assert block is not None, "the README's partitioning recipe"
    sql = re.sub(r"--[^\n]*", "", block.group(1))
    return [s.strip() for s in sql.split(";") if s.strip()]


async def test_the_readmes_monthly_partitions_keep_chains_writable_verifiable_and_prunable() -> None:
    async with postgres_database() as url:
        engine = open_engine(url)
        try:
            await upgrade(engine)
            await write_chain(url, "before", [NOV + 10, NOV + 20])  # rows that the recipe moves over
            async with engine.begin() as conn:
                for statement in _recipe():
                    await conn.execute(sa.text(statement))
            await write_chain(url, "before", [NOV + 30, DEC + 10])
            await write_chain(url, "after", [NOV + 40, DEC + 20, DEC + 30])
            assert (await verify(engine)).ok
            result = await prune(engine, DEC, actor="test")
            assert result.chains == {"before": 3, "after": 1}
            async with engine.begin() as conn:
                assert (await conn.execute(sa.text("SELECT count(*) FROM audit_2026_11"))).scalar() == 0
                await conn.execute(sa.text("DROP TABLE audit_2026_11"))
            report = await verify(engine)
            assert report.ok, report.problems
            assert [(r["chain"], r["chain_seq"]) for r in await rows_of(engine)] == [
                ("after", 2),
                ("after", 3),
                ("before", 4),
            ]
        finally:
            await engine.dispose()
