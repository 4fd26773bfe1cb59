"""`audit verify`: walk every chain, name the first row that does not fit, and report
each chain's head.

A chain is walked from its first row, or from its checkpoint when its oldest rows were
pruned (the first row kept must link to the checkpoint's hash), or from an anchor
(`start_at`: only the rows from the anchor's position on are read; the row there must
still have the anchor's hash). Against anchors (`expect`, and `start_at` too) a chain
must also still reach the anchor's position with the same row there: rows cut from the
end of a chain leave no broken link, and only an anchor taken before shows them gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from ..store import audit as store
from .anchor import Mark, state_of
from .chain import GENESIS, row_hash


@dataclass
class ChainProblem:
    chain: str
    message: str
    seq: int | None = None
    """The row's `seq`, when the problem is a row's; None for a chain's (shorter than its anchor)."""
    chain_seq: int | None = None

    def __str__(self) -> str:
        if self.seq is None:
            return f"chain {self.chain}: {self.message}"
        return f"row seq={self.seq} (chain {self.chain} #{self.chain_seq}): {self.message}"


@dataclass
class Head:
    """Where a chain ends now, and what the walk covered."""

    chain: str
    rows: int
    """Rows verified in this chain."""
    last_seq: int
    last_hash: str
    kind: str | None
    start: int = 0
    """Position the walk started after: 0 (the first row), a checkpoint's or an anchor's."""
    origin: str = "first row"
    """`first row`, `checkpoint` or `anchor`."""

    @property
    def state(self) -> str:
        return state_of(self.kind)

    def __str__(self) -> str:
        origin = "its first row" if self.start == 0 else f"the {self.origin} at #{self.start}"
        return (
            f"chain {self.chain}: {self.state}, {self.rows} row(s) verified from {origin}, "
            f"last seq {self.last_seq}, last hash {self.last_hash}"
        )


@dataclass
class Report:
    rows: int = 0
    chains: int = 0
    problems: list[ChainProblem] = field(default_factory=list)
    heads: list[Head] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What could not be checked and is not a failure (an anchored row since pruned)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> ChainProblem | None:
        """The first bad row by `seq`, else the first chain-level problem."""
        rows = [p for p in self.problems if p.seq is not None]
        if rows:
            return min(rows, key=lambda p: p.seq or 0)
        return self.problems[0] if self.problems else None


async def verify(
    engine: AsyncEngine, *, expect: dict[str, Mark] | None = None, start_at: dict[str, Mark] | None = None
) -> Report:
    """Check every chain (from its checkpoint if pruned, from `start_at`'s mark if given) and,
    against `expect` and `start_at`, that no chain lost rows from its end; records the first
    problem of each chain."""
    report = Report()
    checkpoints = await store.checkpoints(engine)
    names = await store.chains(engine)
    anchors = {**(expect or {}), **(start_at or {})}
    for chain in sorted(set(anchors) - set(names)):
        report.problems.append(
            ChainProblem(chain, f"is anchored at #{anchors[chain].seq} but has no rows left: the chain was deleted")
        )
    for chain in names:
        report.chains += 1
        # Both anchors' marks are checked when both are given (the walk's start and the one
        # expected may be different anchors: a cut between them must still fail).
        marks = [m for m in ((expect or {}).get(chain), (start_at or {}).get(chain)) if m is not None]
        walk = _Walk(chain, checkpoints.get(chain), (start_at or {}).get(chain), marks)
        await walk.run(engine, report)
        if walk.head.origin == "anchor" and walk.head.rows == 0:
            # Nothing from the anchored row on: the chain ends before it. Say where.
            head = await store.newest(engine, chain)
            if head is not None:
                walk.head.last_seq, walk.head.last_hash, walk.head.kind = head["chain_seq"], head["hash"], head["kind"]
        report.heads.append(walk.head)
        for mark in dict.fromkeys(marks):
            walk.check_anchor(mark, report)
    return report


class _Walk:
    """One chain's walk: from its first row, its checkpoint, or an anchor."""

    def __init__(
        self, chain: str, checkpoint: dict[str, object] | None, start: Mark | None, anchored: list[Mark]
    ) -> None:
        self.checkpoint = checkpoint
        self.anchored = {mark.seq for mark in anchored}
        self.seen: dict[int, str] = {}
        """The hash of the row at each anchored position the walk passed."""
        self.pruned_to = 0
        self.head = Head(chain, 0, 0, GENESIS, None)
        self.expected_prev: str | None = GENESIS
        self.start = start
        if checkpoint is not None:
            self.pruned_to = int(checkpoint["chain_seq"])  # type: ignore[call-overload]
            self.head = Head(chain, 0, self.pruned_to, str(checkpoint["hash"]), str(checkpoint["kind"]))
            self.head.start, self.head.origin = self.pruned_to, "checkpoint"
            self.expected_prev = self.head.last_hash
        if start is not None and start.seq > self.head.start:
            # The row at the anchor's position is read (its hash must be the anchor's, and its
            # content must match its hash); the link before it was checked when the anchor was taken.
            self.head = Head(chain, 0, start.seq - 1, "", None, start.seq, "anchor")
            self.expected_prev = None

    def _problem(self, row: dict[str, object]) -> str | None:
        expected_seq = self.head.last_seq + 1
        if row["chain_seq"] != expected_seq:
            return f"position {row['chain_seq']} where {expected_seq} was expected: a row was deleted or moved"
        if self.expected_prev is None and self.start is not None and row["hash"] != self.start.hash:
            return f"is not the row the anchor holds at #{self.start.seq} (another hash): the chain was rewritten"
        if self.expected_prev is not None and row["prev_hash"] != self.expected_prev:
            return "does not link to the row before it: rows were deleted, inserted or reordered"
        if row_hash(row) != row["hash"]:
            return "its content does not match its hash: the row was edited"
        return None

    def _count(self, row: dict[str, object], report: Report) -> None:
        report.rows += 1
        self.head.rows += 1
        self.head.last_seq, self.head.last_hash, self.head.kind = row["chain_seq"], row["hash"], row["kind"]  # type: ignore[assignment]
        if row["chain_seq"] in self.anchored:
            self.seen[row["chain_seq"]] = str(row["hash"])

    async def run(self, engine: AsyncEngine, report: Report) -> None:
        chain = self.head.chain
        # No row may sit at or before where the chain starts (position 0, or its checkpoint:
        # a prune deletes rows in the transaction that moves it). A walk never reads those,
        # yet queries and exports show them: a forged row, or rows a forged checkpoint hides.
        hidden = await store.at_or_before(engine, chain, self.pruned_to)
        if hidden is not None:
            where = (
                f"at or before its checkpoint at #{self.pruned_to}, which verify starts after"
                if self.checkpoint is not None
                else "before the first position (#1)"
            )
            report.problems.append(
                ChainProblem(
                    chain,
                    f"is {where}: a row was inserted, or a checkpoint forged over rows still there",
                    hidden["seq"],
                    hidden["chain_seq"],
                )
            )
        async for row in store.in_chain(engine, chain, after=self.head.last_seq):
            message = self._problem(row)
            self._count(row, report)
            if message is not None:
                report.problems.append(ChainProblem(chain, message, row["seq"], row["chain_seq"]))
                # The rest is counted (the chain's head is still worth showing), not checked.
                async for rest in store.in_chain(engine, chain, after=row["chain_seq"]):
                    self._count(rest, report)
                return
            self.expected_prev = row["hash"]

    def check_anchor(self, mark: Mark, report: Report) -> None:
        """The chain must reach the anchor's position, with the anchored row (or the
        checkpoint that replaced it) there."""
        chain, last = self.head.chain, self.head.last_seq
        if last < mark.seq:
            report.problems.append(
                ChainProblem(
                    chain,
                    f"ends at #{last} where the anchor has #{mark.seq}: "
                    f"{mark.seq - last} row(s) were deleted from its end",
                )
            )
        elif mark.seq < self.pruned_to:
            report.notes.append(
                f"chain {chain}: the anchored row #{mark.seq} has since been pruned (checkpoint #{self.pruned_to})"
            )
        elif mark.seq == self.pruned_to and self.checkpoint is not None:
            if self.checkpoint["hash"] != mark.hash:
                report.problems.append(
                    ChainProblem(chain, f"its checkpoint at #{mark.seq} does not hold the anchored hash")
                )
        elif mark.seq in self.seen and self.seen[mark.seq] != mark.hash:
            report.problems.append(
                ChainProblem(
                    chain, f"its row #{mark.seq} is not the anchored one (another hash): the chain was rewritten"
                )
            )
