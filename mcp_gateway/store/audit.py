"""Audit rows: appended in batches by the single writer, read by the admin API and the CLI."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from . import bounds
from . import tables as t
from .engine import SQLITE_CACHE_KIB

log = logging.getLogger(__name__)

COLUMNS = tuple(str(c.name) for c in t.audit.columns)
CONTENT_COLUMNS = tuple(c for c in COLUMNS if c not in ("seq", "hash"))
"""What a row's hash covers: everything but the database's own sequence and the hash itself."""
OPTIONAL_COLUMNS = frozenset({"subject", "issuer"})
"""Content columns added after the chain's format was fixed: covered only when set."""


def _plain(row: Any) -> dict[str, Any]:
    """A result row as a dict with plain `str` keys (SQLAlchemy's are `quoted_name`)."""
    return {str(key): value for key, value in row._mapping.items()}


async def append(engine: AsyncEngine, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows in one transaction: the group commit."""
    async with engine.begin() as conn:
        await conn.execute(insert(t.audit), list(rows))


@dataclass
class Filters:
    since: float | None = None
    until: float | None = None
    team: str | None = None
    principal: str | None = None
    server: str | None = None
    tool: str | None = None
    decision: str | None = None
    kind: str | None = None


def _where(query: Any, f: Filters) -> Any:
    c = t.audit.c
    if f.since is not None:
        query = query.where(c.ts >= f.since)
    if f.until is not None:
        query = query.where(c.ts < f.until)
    for column, value in (
        (c.team_id, f.team),
        (c.principal_id, f.principal),
        (c.server, f.server),
        (c.tool, f.tool),
        (c.decision, f.decision),
        (c.kind, f.kind),
    ):
        if value is not None:
            query = query.where(column == value)
    return query


async def query(
    engine: AsyncEngine, filters: Filters, *, before: int | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Newest first; `before` is the cursor (a `seq`) from the previous page."""
    q = _where(select(t.audit), filters)
    if before is not None:
        q = q.where(t.audit.c.seq < before)
    q = q.order_by(t.audit.c.seq.desc()).limit(limit)
    async with engine.connect() as conn:
        return [_plain(r) for r in await conn.execute(q)]


async def _keyset(
    engine: AsyncEngine, query: Callable[[int], Select[Any]], key: str, after: int, page: int
) -> AsyncIterator[dict[str, Any]]:
    """Rows of `query(after)` in pages, each page starting past the last row's `key`."""
    while True:
        async with engine.connect() as conn:
            result = await conn.execute(query(after).limit(page))
            keys = [str(key) for key in result.keys()]  # noqa: SIM118 (a Result, not a dict)
            # zip over the plain row: a third of the cost of `_plain`'s mapping view per row.
            rows = [dict(zip(keys, r, strict=True)) for r in result]
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after = rows[-1][key]


def ascending(
    engine: AsyncEngine, filters: Filters, *, after: int = 0, page: int = 1000
) -> AsyncIterator[dict[str, Any]]:
    """Every matching row, oldest first, in pages."""
    c = t.audit.c
    return _keyset(
        engine, lambda last: _where(select(t.audit), filters).where(c.seq > last).order_by(c.seq), "seq", after, page
    )


_PG_CHAINS = text(
    "WITH RECURSIVE c AS ((SELECT chain FROM audit ORDER BY chain LIMIT 1) UNION ALL"
    " SELECT (SELECT chain FROM audit WHERE chain > c.chain ORDER BY chain LIMIT 1) FROM c WHERE c.chain IS NOT NULL)"
    " SELECT chain FROM c WHERE chain IS NOT NULL"
)
"""The distinct chains by a skip scan of the `(chain, chain_seq)` index: one probe a chain
rather than a pass over every row, which PostgreSQL's own DISTINCT would make (SQLite
skips through the index for DISTINCT by itself)."""


async def chains(engine: AsyncEngine) -> list[str]:
    """Every chain with rows or a checkpoint (a chain pruned away entirely has only that)."""
    c = t.audit.c
    query = _PG_CHAINS if engine.dialect.name == "postgresql" else select(c.chain).distinct()
    async with engine.connect() as conn:
        names = {r[0] for r in await conn.execute(query)}
        names |= {r[0] for r in await conn.execute(select(t.audit_checkpoints.c.chain))}
    return sorted(names)


async def checkpoints(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    """Each pruned chain's checkpoint (see `tables.audit_checkpoints`), by chain."""
    async with engine.connect() as conn:
        rows = [_plain(r) for r in await conn.execute(select(t.audit_checkpoints))]
    return {row["chain"]: row for row in rows}


def in_chain(engine: AsyncEngine, chain: str, *, after: int = 0, page: int = 5000) -> AsyncIterator[dict[str, Any]]:
    """The rows of `chain` past position `after`, in chain order: what `verify` walks."""
    c = t.audit.c

    def rows(last: int) -> Select[Any]:
        return select(t.audit).where(c.chain == chain, c.chain_seq > last).order_by(c.chain_seq)

    return _keyset(engine, rows, "chain_seq", after, page)


async def at_or_before(engine: AsyncEngine, chain: str, position: int) -> dict[str, Any] | None:
    """The first row of `chain` at or before `position` (where a chain starts: 0, or its
    checkpoint's), if any: one index probe. None belongs there; see `audit.verify`."""
    c = t.audit.c
    query = select(t.audit).where(c.chain == chain, c.chain_seq <= position).order_by(c.chain_seq).limit(1)
    async with engine.connect() as conn:
        found = (await conn.execute(query)).first()
    return _plain(found) if found is not None else None


async def newest(engine: AsyncEngine, chain: str) -> dict[str, Any] | None:
    """The head of `chain`: its newest row (`chain`, `chain_seq`, `hash`, `kind`, `ts`), or its
    checkpoint's if pruning left it no row past that."""
    c = t.audit.c
    query = (
        select(c.chain, c.chain_seq, c.hash, c.kind, c.ts).where(c.chain == chain).order_by(c.chain_seq.desc()).limit(1)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
        mark = (await conn.execute(select(t.audit_checkpoints).where(t.audit_checkpoints.c.chain == chain))).first()
    checkpoint = _plain(mark) if mark is not None else None
    if row is not None and (checkpoint is None or row.chain_seq > checkpoint["chain_seq"]):
        return _plain(row)
    if checkpoint is not None:
        return {key: checkpoint[key] for key in ("chain", "chain_seq", "hash", "kind", "ts")}
    return None


async def heads(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    """Each chain's head (see `newest`), by chain: one index probe a chain, whatever its length."""
    found: dict[str, dict[str, Any]] = {}
    for chain in await chains(engine):
        head = await newest(engine, chain)
        if head is not None:
            found[chain] = head
    return found


# -- the writer's fast path ----------------------------------------------------------------
#
# Audit rows sit on the hot path: a call waits for its decision row's commit. SQLAlchemy's
# async engine costs several thread hops (aiosqlite) or statement-building passes per
# commit, so the single writer uses a connection of its own: a sqlite3 connection driven
# from one worker thread (one hop per batch), or a raw asyncpg connection (one pipelined
# round trip per statement). The statement is generated from the table, so the schema has
# one source.

_INSERT_COLUMNS = (*CONTENT_COLUMNS, "hash")
"""Every column but the database's `seq`, in the order `audit.chain.link` builds a row."""


def _values(rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Statement parameters for rows as `audit.chain.link` builds them: every inserted
    column, in table order."""
    return [tuple(row.values()) for row in rows]


def _insert_sql(placeholder: Any) -> str:
    names = ", ".join(_INSERT_COLUMNS)
    values = ", ".join(placeholder(i) for i in range(1, len(_INSERT_COLUMNS) + 1))
    return f"INSERT INTO audit ({names}) VALUES ({values})"


_HEAD_SQL = (
    "SELECT chain_seq, hash FROM"
    " (SELECT chain_seq, hash FROM audit WHERE chain = {p} ORDER BY chain_seq DESC LIMIT 1) AS newest"
    " UNION ALL SELECT chain_seq, hash FROM audit_checkpoints WHERE chain = {p}"
    " ORDER BY chain_seq DESC LIMIT 1"
)
"""Where a chain goes on: its newest row, or, when pruning left it none, its checkpoint."""


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("audit: WAL checkpoint failed: %s", future.exception())


def _discard(conn: sqlite3.Connection | None) -> None:
    if conn is None:
        return
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
    conn.close()


class SqliteAppender:
    """Batches into SQLite on a connection of its own.

    A batch is written on the event loop's thread: in WAL mode with `synchronous=NORMAL` an
    INSERT and COMMIT touch only the WAL (no fsync) and take tens of microseconds, less than
    handing the batch to a thread and back (tried: under load, a writer thread of its own
    left the gateway's throughput and its loop's CPU per call where they were). Two things
    could make that slow, and both are kept off the loop: this connection never waits for a
    lock (a busy database sends the batch to the worker thread, which does wait), and it
    never checkpoints (a worker thread does that every second on a connection of its own).

    A checkpoint that races a steady stream of commits never finds the log fully copied
    when a write begins, so the log is never restarted and grows without end (seen: a
    gigabyte in two minutes at 200 calls/s). So each checkpoint is two passes in the worker
    thread: a PASSIVE one that copies the log while writes go on, then a TRUNCATE of the
    little written meanwhile, during which batches queue behind it on the worker thread
    instead of racing it (a stall of a millisecond or so, not of the whole copy).
    """

    CHECKPOINT_EVERY = 1.0

    def __init__(self, path: str) -> None:
        self._path = path
        self._fast: sqlite3.Connection | None = None
        self._slow: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sqlite")
        self._sql = _insert_sql(lambda _: "?")
        self._checkpointed = 0.0
        self._checkpointing: asyncio.Future[None] | None = None
        self._diverting = False
        """Set by the worker thread for the TRUNCATE pass: batches go to the thread meanwhile."""

    def _open(self, busy_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA journal_size_limit=16777216")  # a reset log is cut back to 16 MiB
        return conn

    def _insert(self, conn: sqlite3.Connection, rows: Sequence[dict[str, Any]]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(self._sql, _values(rows))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _probe(self, row: dict[str, Any]) -> None:
        # Committed, not rolled back: a full disk fails only when the log is written.
        if self._slow is None:
            self._slow = self._open(busy_ms=5000)
        conn = self._slow
        try:
            conn.execute("BEGIN IMMEDIATE")
            cursor = conn.execute(self._sql, _values([row])[0])
            conn.execute("DELETE FROM audit WHERE seq = ?", (cursor.lastrowid,))
            conn.execute("COMMIT")
        except BaseException:
            self._slow = None
            _discard(conn)
            raise

    async def probe(self, row: dict[str, Any]) -> None:
        """Write `row` and take it out again in one committed transaction: can rows be appended?

        Checkpointed like a batch: each probe adds pages to the log (about 20 KB), and an
        idle gateway probes every `audit_probe_interval` with no batch to checkpoint after."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._probe, row)
        self._checkpoint_due(loop)

    def _insert_waiting(self, rows: Sequence[dict[str, Any]]) -> None:
        if self._slow is None:
            self._slow = self._open(busy_ms=5000)
        try:
            self._insert(self._slow, rows)
        except sqlite3.Error:
            conn, self._slow = self._slow, None
            _discard(conn)
            raise

    def _checkpoint(self) -> None:
        if self._slow is None:
            self._slow = self._open(busy_ms=5000)
        self._slow.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._diverting = True
        try:
            busy, _, _ = self._slow.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self._diverting = False
        if busy:
            log.debug("audit: WAL checkpoint found the database busy; it runs again shortly")

    async def append(self, rows: Sequence[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        if self._diverting:
            await loop.run_in_executor(self._thread, self._insert_waiting, rows)
            return
        if self._fast is None:
            self._fast = self._open(busy_ms=0)
        try:
            self._insert(self._fast, rows)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                # A connection SQLite opened read-only stays so: the next try opens anew.
                conn, self._fast = self._fast, None
                _discard(conn)
                raise
            await loop.run_in_executor(self._thread, self._insert_waiting, rows)
        self._checkpoint_due(loop)

    def _checkpoint_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a checkpoint on the worker thread, unless one ran within `CHECKPOINT_EVERY`."""
        now = loop.time()
        if self._checkpointing is None and now - self._checkpointed > self.CHECKPOINT_EVERY:
            self._checkpointed = now
            self._checkpointing = loop.run_in_executor(self._thread, self._checkpoint)
            self._checkpointing.add_done_callback(self._checkpointed_now)

    def _checkpointed_now(self, future: asyncio.Future[None]) -> None:
        self._checkpointing = None
        _log_failure(future)

    def _head(self, chain: str) -> tuple[int, str] | None:
        if self._slow is None:
            self._slow = self._open(busy_ms=5000)
        row = self._slow.execute(_HEAD_SQL.format(p="?1"), (chain,)).fetchone()
        return (int(row[0]), str(row[1])) if row is not None else None

    async def head(self, chain: str) -> tuple[int, str] | None:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._head, chain)

    def _close(self) -> None:
        for conn in (self._slow, self._fast):
            if conn is not None:
                conn.close()
        self._slow = self._fast = None

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)


class PostgresAppender:
    """Batches into PostgreSQL over a raw asyncpg connection of its own, reconnected on failure.

    Every operation is bounded by `timeout` (see `bounds`): past it, or on any failure,
    the connection is abandoned, not rolled back, so a partition can neither hold the
    writer nor let a batch commit after the writer gave up on it."""

    def __init__(self, connect_args: dict[str, Any], timeout: float = bounds.STORE_TIMEOUT) -> None:
        self._args = connect_args
        self.timeout = timeout
        self._conn: Any = None
        self._sql = _insert_sql(lambda i: f"${i}")

    async def _connection(self) -> Any:
        import asyncpg

        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(**self._args, **bounds.connect_options(self.timeout))
            bounds.harden(self._conn, self.timeout)
        return self._conn

    async def _bounded(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        watchdog = None
        try:
            conn = await self._connection()
            watchdog = bounds.Watchdog(conn, self.timeout)
            return await work(conn)
        except BaseException as exc:
            self._drop()
            if watchdog is not None and watchdog.fired:
                raise TimeoutError(f"the store did not answer within {self.timeout:g}s") from exc
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def append(self, rows: Sequence[dict[str, Any]]) -> None:
        async def insert(conn: Any) -> None:
            # Not `async with conn.transaction()`: on failure it awaits a ROLLBACK, which a
            # dead network never answers. A failed batch abandons the connection instead.
            transaction = conn.transaction()
            await transaction.start()
            await conn.executemany(self._sql, _values(rows))
            await transaction.commit()

        await self._bounded(insert)

    async def probe(self, row: dict[str, Any]) -> None:
        """Insert `row` in a transaction that is then rolled back: may this role append rows?"""

        async def insert(conn: Any) -> None:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute(self._sql, *_values([row])[0])
            await transaction.rollback()

        await self._bounded(insert)

    async def head(self, chain: str) -> tuple[int, str] | None:
        row = await self._bounded(lambda conn: conn.fetchrow(_HEAD_SQL.format(p="$1"), chain))
        return (int(row[0]), str(row[1])) if row is not None else None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        bounds.abandon(conn)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=self.timeout)
            except Exception as exc:  # closing is best effort: the server ends the session either way
                log.warning("audit: connection not closed cleanly (%s); abandoned", type(exc).__name__)
                bounds.abandon(conn)
            except BaseException:
                bounds.abandon(conn)
                raise


def appender(url: str, timeout: float = bounds.STORE_TIMEOUT) -> SqliteAppender | PostgresAppender:
    """The writer's connection for the store at `url`; on PostgreSQL, each operation bounded by `timeout`."""
    from sqlalchemy.engine import make_url

    from .engine import normalize_url

    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        return SqliteAppender(parsed.database or ":memory:")
    from .notify import connect_args

    return PostgresAppender(connect_args(url), timeout)
