"""The single audit writer: group commit from a bounded queue, hash-chained.

Callers enqueue rows; one task drains whatever is waiting into one transaction, chains
the rows, commits, and wakes the callers that wait for their commit. The queue is
bounded: when it is full a caller waits briefly, then gets `AuditUnavailable`, and a call
that cannot be audited is not made.

The wait for a commit is bounded too (`store_timeout`): a caller whose row is not
committed by then is told `AuditUnavailable`, and its call is denied then and there, never
forwarded later. Its row may still reach the log afterwards (it was queued, or its commit
was in flight): then the writer follows an allowed decision row with a completion row,
outcome `not_forwarded`, so the log says what happened. A denial that cannot be audited
is logged instead (a WARNING a denial, at most `LOG_LIMIT` a second).

Health: the writer knows whether rows can be appended (`healthy`), and readiness follows it.
It probes at start (a row written and taken out again: a read-only database, a full disk or
a role without INSERT fails it), every failed commit makes it unhealthy, and a watcher
probes whenever no write was tried for a while: every `PROBE_EVERY` seconds while
unhealthy, so it is healthy again once the store takes rows, and every `probe_interval`
(setting `audit_probe_interval`) while healthy, so an idle gateway whose store stops taking
rows is not ready within that interval, not only once a call has failed. A busy writer's
commits say the same, so it never probes: a commit pays a flag and a timestamp.

This is on every call's path, so it uses asyncio's queue and futures directly (a few
microseconds each) rather than heavier abstractions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..errors import AuditUnavailable
from ..store.audit import PostgresAppender, SqliteAppender
from ..store.bounds import STORE_TIMEOUT
from .chain import GENESIS, link

log = logging.getLogger(__name__)

BATCH = 512

PROBE_EVERY = 1.0
"""While the audit cannot be written, how often the writer tries again by itself."""

PROBE_INTERVAL = 10.0
"""While it can, how long the writer goes without a write before it probes (`audit_probe_interval`)."""

LOG_LIMIT = 20
"""Unaudited denials logged one a line, at most this many a second (the rest counted)."""

_Item = tuple[dict[str, Any], "asyncio.Future[None] | None"]

_CALL_KEYS = (
    "call_id",
    "principal_id",
    "team_id",
    "server",
    "tool",
    "method",
    "decision",
    "rule_id",
    "policy_version",
    "subject",
    "issuer",
)
"""What a completion row repeats of its decision row."""


def _unavailable(detail: str) -> AuditUnavailable:
    return AuditUnavailable(
        "the call was not made: its audit record could not be written",
        {"reason": "audit unavailable", "detail": detail},
    )


class AuditWriter:
    """Appends rows to one chain of the audit table."""

    def __init__(
        self,
        store: SqliteAppender | PostgresAppender,
        chain: str,
        queue_size: int = 10_000,
        push_timeout: float = 1.0,
        timeout: float = STORE_TIMEOUT,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self.store = store
        self.chain = chain
        self.push_timeout = push_timeout
        self.timeout = timeout
        """How long a caller waits for its row's commit."""
        self.probe_interval = probe_interval
        """While healthy, how long without a write before the watcher probes."""
        self._tried = time.perf_counter()
        """When the last write (commit or probe) ended (`perf_counter`)."""
        self._committing = False
        self._probing: asyncio.Future[None] | None = None
        """Set while the watcher probes: the next commit waits for it (one store operation at a time)."""
        self._watching: anyio.CancelScope | None = None
        self._watched = anyio.Event()
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(queue_size)
        self._seq = 0
        self._prev = GENESIS
        self._resync = False
        self._closed = False
        self._stopped = asyncio.Event()
        self._end = False
        """Whether the stop writes an `end` row (`drain(end=True)`), after every other row."""
        self._unsure: tuple[int, list[dict[str, Any]]] | None = None
        """A failed batch that may have committed after all: its last chain_seq and its waited-for rows."""
        self._log_window = 0.0
        self._logged = 0
        self._unlogged = 0
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None
        self.on_commit: Callable[[int, float, bool], None] | None = None
        """Told each commit's rows, seconds and success (the metrics)."""

    @property
    def depth(self) -> int:
        """Rows queued, not yet handed to a commit."""
        return self._queue.qsize()

    async def start(self, tg: TaskGroup) -> None:
        head = await self.store.head(self.chain)
        if head is not None:
            self._seq, self._prev = head
        await self.probe()
        tg.start_soon(self._run)
        await tg.start(self._watch)

    @property
    def healthy(self) -> bool:
        """Whether the last write (commit or probe) succeeded: calls can be audited."""
        return self.last_error is None

    async def probe(self) -> bool:
        """Try a write that leaves nothing behind; returns (and records) whether it worked."""
        row = link({"ts": time.time(), "kind": "probe"}, self.chain, 0, GENESIS)
        try:
            async with asyncio.timeout(self.timeout * 3):
                await self.store.probe(row)
        except Exception as exc:  # any failure means the same thing: rows cannot be appended now
            error = _describe(exc)
            # One line when health changes, not one a probe: the reason can vary from probe
            # to probe (SQLite says "disk I/O error", then "readonly database"); `/readyz`
            # shows the current one.
            if self.last_error is None:
                log.error("audit: the store does not take rows: %s", error)
            elif error != self.last_error:
                log.debug("audit: the store still does not take rows: %s", error)
            self.last_error = error
            return False
        finally:
            self._tried = time.perf_counter()
        if self.last_error is not None:
            log.warning("audit: the store takes rows again")
        self.last_error = None
        return True

    async def _watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Probe whenever no write was tried for `probe_interval` (`PROBE_EVERY` while unhealthy).

        Only between commits: it starts no probe while one is under way, and a commit that
        comes meanwhile waits for the probe, so the store sees one operation at a time (an
        asyncpg connection takes no second one) and health is set in the order written.
        Stopped by `drain` before the store closes."""
        try:
            with anyio.CancelScope() as self._watching:
                task_status.started()
                while not self._closed:
                    every = self.probe_interval if self.healthy else PROBE_EVERY
                    wait = self._tried + every - time.perf_counter()
                    if self._committing:
                        wait = every  # the commit will tell
                    if wait > 0:
                        # Never longer than `PROBE_EVERY`: a commit that fails meanwhile makes
                        # it unhealthy, and from then on the store is to be tried every
                        # `PROBE_EVERY`, not once the idle interval is over (an idle
                        # gateway, out of its load balancer, has no other way back).
                        await anyio.sleep(min(wait, PROBE_EVERY))
                        continue
                    self._probing = probing = asyncio.get_running_loop().create_future()
                    try:
                        await self.probe()
                    finally:
                        self._probing = None
                        if not probing.done():  # a commit cancelled while waiting cancels it
                            probing.set_result(None)
        finally:
            self._watched.set()

    async def drain(self, timeout: float = 5.0, *, end: bool = False) -> None:
        """Stop taking rows and wait (up to `timeout`) for the queued ones to be written.

        With `end`, the last row is an `end` row: the chain was closed by a clean stop, with
        every row before it written, so `audit verify` can tell it from a chain cut short
        (a crash, or rows deleted from its end), which stays `open`."""
        if not self._closed:
            self._closed = True
            self._end = end
            with anyio.move_on_after(timeout, shield=True):
                if self._watching is not None:
                    # First: a probe under way is cut short (a PostgreSQL one abandons its
                    # connection), so the last rows need not wait for it, and nothing but
                    # the writer uses the store from here on.
                    self._watching.cancel()
                    await self._watched.wait()
                await self._queue.put(None)
                await self._stopped.wait()
        with anyio.CancelScope(shield=True):
            await self.store.aclose()

    def _end_row(self) -> dict[str, Any]:
        return {
            "ts": time.time(),
            "kind": "end",
            "outcome": "ended",
            "detail": f"stopped cleanly after {self.written} row(s) from this process",
        }

    async def _finish(self) -> None:
        """At the stop: what the last commits queued (a completion row for a call denied while
        its decision row was committing), then, last of all, the end row."""
        while not self._queue.empty():
            taken = [self._queue.get_nowait() for _ in range(min(BATCH, self._queue.qsize()))]
            batch = [item for item in taken if item is not None]
            if batch:
                await self._commit(batch)
        if self._end:
            await self._commit([(self._end_row(), None)])

    def append_nowait(self, row: dict[str, Any]) -> None:
        """Queue a row whose caller does not wait for it; raises `AuditUnavailable` if the queue is full."""
        if self._closed:
            raise _unavailable("the audit log is closed")
        try:
            self._queue.put_nowait((row, None))
        except asyncio.QueueFull:
            raise _unavailable("the audit queue is full") from None

    async def append(self, row: dict[str, Any]) -> None:
        """Queue a row and return once it is committed; raises `AuditUnavailable` if it is
        not committed within `timeout`."""
        try:
            await self._append(row)
        except AuditUnavailable as exc:
            self._unaudited(row, exc)
            raise

    async def _append(self, row: dict[str, Any]) -> None:
        if self._closed:
            raise _unavailable("the audit log is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        done: asyncio.Future[None] = loop.create_future()
        try:
            self._queue.put_nowait((row, done))
        except asyncio.QueueFull:
            try:
                async with asyncio.timeout(min(self.push_timeout, self.timeout)):
                    await self._queue.put((row, done))
            except TimeoutError:
                raise _unavailable("the audit queue is full") from None
        try:
            async with asyncio.timeout_at(deadline):
                # Shielded: a timeout must leave `done` for the writer to settle below.
                await asyncio.shield(done)
        except TimeoutError:
            if done.done() and not done.cancelled() and done.exception() is None:
                return  # committed just in time
            exc = _unavailable(f"the audit row was not committed within {self.timeout:g}s (store_timeout)")
            if not done.done():
                # Marks the row as one whose caller was denied; retrieved at once, so that
                # nothing complains of an exception never looked at.
                done.set_exception(exc)
                done.exception()
            raise exc from None
        except asyncio.CancelledError:
            done.cancel()
            raise

    def _unaudited(self, row: dict[str, Any], exc: AuditUnavailable) -> None:
        """Log what the audit could not take: these denials exist nowhere else."""
        now = asyncio.get_running_loop().time()
        if now - self._log_window >= 1.0:
            if self._unlogged:
                log.warning("audit unavailable: %d more unaudited denial(s) not logged one by one", self._unlogged)
            self._log_window, self._logged, self._unlogged = now, 0, 0
        if self._logged >= LOG_LIMIT:
            self._unlogged += 1
            return
        self._logged += 1
        detail = exc.data.get("detail") if isinstance(exc.data, dict) else None
        if row.get("kind") == "admin":
            log.warning(
                "audit unavailable: admin action %r by %r refused, not audited (%s)",
                row.get("method"),
                row.get("principal_id"),
                detail,
            )
            return
        reason = row.get("reason") if row.get("decision") == "deny" else "audit unavailable"
        log.warning(
            "audit unavailable: call %s denied, not audited: principal %r (team %r) %s %r/%r: %s (%s)",
            row.get("call_id"),
            row.get("principal_id"),
            row.get("team_id"),
            row.get("method"),
            row.get("server"),
            row.get("tool"),
            reason,
            detail,
        )

    async def _run(self) -> None:
        try:
            while True:
                first = await self._queue.get()
                if first is None:
                    await self._finish()
                    return
                batch = [first]
                # One loop turn more: the calls that are ready now reach their audit row
                # too and share this commit. A commit's fixed cost (its WAL pages) is worth
                # several rows' (measured: 12 rows a commit at ~11 us a row, 24 at ~9 us),
                # and the wait is one turn of the loop.
                await asyncio.sleep(0)
                stop = False
                while len(batch) < BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                await self._commit(batch)
                if stop:
                    await self._finish()
                    return
        finally:
            self._stopped.set()

    def _chain(self, batch: list[_Item]) -> list[dict[str, Any]]:
        seq, prev = self._seq, self._prev
        rows = []
        for row, _ in batch:
            seq += 1
            linked = link(row, self.chain, seq, prev)
            prev = linked["hash"]
            rows.append(linked)
        return rows

    async def _commit(self, batch: list[_Item]) -> None:
        while (probing := self._probing) is not None:
            # Shielded: a commit cancelled while it waits must not cancel the watcher's future
            # (a cancelled one would raise in the next commit that waits on it).
            await asyncio.shield(probing)
        self._committing = True
        started = time.perf_counter()
        ok = False
        try:
            await self._write(batch)
            ok = self.last_error is None
        finally:
            self._committing = False
            self._tried = time.perf_counter()
            if self.on_commit is not None:
                self.on_commit(len(batch), self._tried - started, ok)

    async def _write(self, batch: list[_Item]) -> None:
        sent: list[dict[str, Any]] | None = None
        try:
            # The appender bounds its own work (and abandons its connection); this bounds
            # the rest, and SQLite's waits.
            async with asyncio.timeout(self.timeout * 3):
                if self._resync:
                    # A failed commit may have landed after all (the connection died after
                    # COMMIT was sent): continue from what the store holds, never fork.
                    head = await self.store.head(self.chain)
                    self._seq, self._prev = head if head is not None else (0, GENESIS)
                    self._resync = False
                    self._settle_unsure(head[0] if head is not None else 0)
                sent = rows = self._chain(batch)
                await self.store.append(rows)
        except Exception as exc:  # the writer must outlive any failure; callers are told, not crashed
            self._resync = True
            if sent is not None:
                self._unsure = (sent[-1]["chain_seq"], [row for row, done in batch if done is not None])
            self.failures += 1
            self.last_error = _describe(exc)
            log.error("audit: %d row(s) not written: %s", len(batch), self.last_error)
            for _, done in batch:
                if done is not None and not done.done():
                    done.set_exception(_unavailable(self.last_error))
            return
        self._seq, self._prev = rows[-1]["chain_seq"], rows[-1]["hash"]
        self.written += len(rows)
        if self.last_error is not None:
            log.warning("audit: the store takes rows again")
        self.last_error = None
        for row, done in batch:
            if done is None:
                continue
            if not done.done():
                done.set_result(None)
            elif not done.cancelled():
                self._not_forwarded(row)  # its caller gave up waiting and was denied

    def _settle_unsure(self, head: int) -> None:
        """A batch whose commit failed was committed after all if the chain reaches it:
        its callers were denied, so say so after each allowed decision in it."""
        unsure, self._unsure = self._unsure, None
        if unsure is not None and head >= unsure[0]:
            for row in unsure[1]:
                self._not_forwarded(row)

    def _not_forwarded(self, row: dict[str, Any]) -> None:
        if row.get("kind") != "decision" or row.get("decision") != "allow":
            return
        completion = {
            "ts": time.time(),
            "kind": "completion",
            **{key: row.get(key) for key in _CALL_KEYS},
            "outcome": "not_forwarded",
            "detail": f"denied: its decision row was committed after the audit wait ({self.timeout:g}s) ended",
        }
        try:
            self._queue.put_nowait((completion, None))
        except asyncio.QueueFull:
            log.error("audit: call %s was denied after its decision row; that was not recorded", row.get("call_id"))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
