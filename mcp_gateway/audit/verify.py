"""`audit verify`: walk every chain and name the first row that does not fit."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from ..store import audit as store
from .chain import GENESIS, row_hash


@dataclass
class Problem:
    seq: int
    chain: str
    chain_seq: int
    message: str

    def __str__(self) -> str:
        return f"row seq={self.seq} (chain {self.chain} #{self.chain_seq}): {self.message}"


@dataclass
class Report:
    rows: int = 0
    chains: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None


async def verify(engine: AsyncEngine) -> Report:
    """Check every chain; records the first problem of each chain."""
    report = Report()
    chain: str | None = None
    expected_seq, expected_prev, broken = 1, GENESIS, False
    async for row in store.by_chain(engine):
        if row["chain"] != chain:
            chain, expected_seq, expected_prev, broken = row["chain"], 1, GENESIS, False
            report.chains += 1
        report.rows += 1
        if broken:
            continue
        message = None
        if row["chain_seq"] != expected_seq:
            message = f"position {row['chain_seq']} where {expected_seq} was expected: a row was deleted or moved"
        elif row["prev_hash"] != expected_prev:
            message = "does not link to the row before it: rows were deleted, inserted or reordered"
        elif row_hash(row) != row["hash"]:
            message = "its content does not match its hash: the row was edited"
        if message is not None:
            report.problems.append(Problem(row["seq"], row["chain"], row["chain_seq"], message))
            broken = True
            continue
        expected_seq += 1
        expected_prev = row["hash"]
    return report
