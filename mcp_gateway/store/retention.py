"""Pruning the audit log: a whole prefix of each chain at a time, a bounded batch at a time.

A chain is cut only at a row boundary that keeps it verifiable: the rows pruned from a
chain are always its oldest ones, and the checkpoint (`tables.audit_checkpoints`) takes the
position and hash of the last of them, in the same transaction as their deletion, so the
first row kept links to the checkpoint and no state between two batches breaks the chain.

Every statement reads or deletes at most one batch of one chain through the `(chain,
chain_seq)` index, so pruning costs in proportion to the rows pruned (not the table), and
holds locks (SQLite's write lock among them) one batch at a time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from . import bounds
from . import tables as t
from .audit import _plain

BATCH = 2000
"""Rows read, or deleted, by one statement."""

PRUNE_LOCK = 724_511_094
"""PostgreSQL advisory lock id: one prune at a time, whichever replica or command runs it."""


class CheckpointMoved(Exception):
    """Another prune moved the chain's checkpoint since this one read it: this prune stops
    there for the chain (what it deleted before stays deleted, consistently)."""

    def __init__(self, chain: str, deleted: int) -> None:
        super().__init__(f"chain {chain}: its checkpoint was moved by another prune")
        self.chain = chain
        self.deleted = deleted
        """Rows this prune deleted from the chain before it found that."""


async def oldest(
    engine: AsyncEngine, chain: str, *, after: int, page: int | None = None
) -> AsyncGenerator[dict[str, Any]]:
    """The rows of `chain` past position `after`, oldest first, in pages of `page` (`BATCH`)."""
    page = page or BATCH
    c = t.audit.c
    while True:
        query = select(t.audit).where(c.chain == chain, c.chain_seq > after).order_by(c.chain_seq).limit(page)
        async with engine.connect() as conn:
            rows = [_plain(r) for r in await conn.execute(query)]
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after = rows[-1]["chain_seq"]


async def cut(
    engine: AsyncEngine,
    chain: str,
    upto: dict[str, Any],
    checkpoint: dict[str, Any] | None,
    actor: str,
    batch: int | None = None,
) -> int:
    """Delete the rows of `chain` up to `upto` (a row of it: its `chain_seq`, `hash`, `ts`,
    `kind`), batch by batch, each batch in one transaction with the checkpoint moved to its
    last row. Returns the number of rows deleted; `CheckpointMoved` if another prune moved
    the checkpoint since `checkpoint` was read (the batches before stay done)."""
    batch = batch or BATCH
    c = t.audit.c
    cp = t.audit_checkpoints
    low = int(checkpoint["chain_seq"]) if checkpoint is not None else 0
    total = int(checkpoint["rows"]) if checkpoint is not None else 0
    deleted = 0
    exists = checkpoint is not None
    while low < upto["chain_seq"]:
        high = min(low + batch, upto["chain_seq"])
        try:
            async with engine.begin() as conn:
                # The row at `high` must still be there (the row planned, for the last batch):
                # one gone means another prune got here first. And the checkpoint moves from
                # `low` only (compare and set): a prune planned from an older checkpoint never
                # moves it back behind rows already deleted, which would break the chain.
                at_high = select(c.hash, c.ts, c.kind).where(c.chain == chain, c.chain_seq == high)
                if high == upto["chain_seq"]:
                    at_high = at_high.where(c.hash == upto["hash"])
                found = (await conn.execute(at_high)).first()
                if found is None:
                    raise CheckpointMoved(chain, deleted)
                last = _plain(found)
                batch_rows = delete(t.audit).where(c.chain == chain, c.chain_seq > low, c.chain_seq <= high)
                gone = (await conn.execute(batch_rows)).rowcount
                values = {
                    "chain_seq": high,
                    "hash": last["hash"],
                    "ts": last["ts"],
                    "kind": last["kind"],
                    "rows": total + deleted + gone,
                    "pruned_at": time.time(),
                    "actor": actor[:128],
                }
                if exists:
                    moved = update(cp).where(cp.c.chain == chain, cp.c.chain_seq == low).values(**values)
                    if (await conn.execute(moved)).rowcount != 1:
                        raise CheckpointMoved(chain, deleted)
                else:
                    await conn.execute(insert(cp).values(chain=chain, **values))
        except IntegrityError:
            raise CheckpointMoved(chain, deleted) from None  # another prune wrote the chain's first checkpoint
        exists = True
        deleted += gone
        low = high
    return deleted


async def pg_lock(engine: AsyncEngine) -> Any:
    """On PostgreSQL, a connection of its own holding the prune lock (None if another holds
    it); on SQLite, where writes take turns anyway, nothing to hold (returns `True`).

    Not one of the engine's connections: the gateway's are abandoned once checked out longer
    than `store_timeout`, and a prune is longer. This one is idle outside a transaction
    while it holds the (session) lock, and TCP keepalive ends it on a dead network, which
    releases the lock."""
    if engine.dialect.name != "postgresql":
        return True
    import asyncpg

    from .notify import connect_args

    url = engine.url.render_as_string(hide_password=False)
    try:
        conn = await asyncpg.connect(**connect_args(url), **bounds.connect_options(bounds.STORE_TIMEOUT))
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The server refused it (restarting, at its connection limit): a store failure, as
        # the engine's would be (the retention loop warns and tries next time).
        raise ConnectionError(f"the prune lock's connection was refused: {exc}") from exc
    bounds.harden(conn, bounds.STORE_TIMEOUT)
    try:
        got = await conn.fetchval(f"SELECT pg_try_advisory_lock({PRUNE_LOCK})")
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        bounds.abandon(conn)
        raise ConnectionError(f"the prune lock was not taken: {exc}") from exc
    except BaseException:
        bounds.abandon(conn)
        raise
    if not got:
        await conn.close(timeout=bounds.STORE_TIMEOUT)
        return None
    return conn


async def pg_unlock(holder: Any) -> None:
    """Release the lock `pg_lock` took (closing its connection releases it too)."""
    if holder is True or holder is None:
        return
    try:
        await holder.close(timeout=bounds.STORE_TIMEOUT)
    except Exception:  # the session ends either way, and the lock with it
        bounds.abandon(holder)
