"""The single audit writer: group commit from a bounded queue, hash-chained.

Callers enqueue rows; one task drains whatever is waiting into one transaction, chains
the rows, commits, and wakes the callers that wait for their commit. The queue is
bounded: when it is full a caller waits briefly, then gets `AuditUnavailable`, and a call
that cannot be audited is not made.

Commits are grouped: before taking a batch the task lets every task that is ready to run
add its row (one turn of the loop), and a batch that nobody waits for (completion rows)
waits up to `LINGER` for company. A commit costs several times more than a row (measured
here: about 80 µs for a batch of one, 25 µs a row in a batch of 32), so fewer, larger
commits cost a call less.

This is on every call's path, so it uses asyncio's queue and futures directly (a few
microseconds each) rather than heavier abstractions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..errors import Denied
from ..store.audit import PostgresAppender, SqliteAppender
from .chain import GENESIS, link

log = logging.getLogger(__name__)

BATCH = 512
LINGER = 0.002

_Item = tuple[dict[str, Any], "asyncio.Future[None] | None"]


class AuditUnavailable(Denied):
    """The audit row could not be committed; the call it described does not happen."""


def _unavailable(detail: str) -> AuditUnavailable:
    return AuditUnavailable(
        "the call was not made: its audit record could not be written",
        {"reason": "audit unavailable", "detail": detail},
    )


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AuditWriter:
    """Appends rows to one chain of the audit table."""

    def __init__(
        self, store: SqliteAppender | PostgresAppender, chain: str, queue_size: int = 10_000, push_timeout: float = 1.0
    ) -> None:
        self.store = store
        self.chain = chain
        self.push_timeout = push_timeout
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(queue_size)
        self._seq = 0
        self._prev = GENESIS
        self._resync = False
        self._closed = False
        self._stopped = asyncio.Event()
        self._awaited = 0
        """Rows in the queue whose callers wait for their commit."""
        self._lingering: asyncio.Future[None] | None = None
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None

    async def start(self, tg: TaskGroup) -> None:
        head = await self.store.head(self.chain)
        if head is not None:
            self._seq, self._prev = head
        tg.start_soon(self._run)

    async def drain(self, timeout: float = 5.0) -> None:
        """Stop taking rows and wait (up to `timeout`) for the queued ones to be written."""
        if not self._closed:
            self._closed = True
            with anyio.move_on_after(timeout, shield=True):
                await self._queue.put(None)
                await self._stopped.wait()
        with anyio.CancelScope(shield=True):
            await self.store.aclose()

    def append_nowait(self, row: dict[str, Any]) -> None:
        """Queue a row whose caller does not wait for it; raises `AuditUnavailable` if the queue is full."""
        if self._closed:
            raise _unavailable("the audit log is closed")
        try:
            self._queue.put_nowait((row, None))
        except asyncio.QueueFull:
            raise _unavailable("the audit queue is full") from None

    async def append(self, row: dict[str, Any]) -> None:
        """Queue a row and return once it is committed; raises `AuditUnavailable` if it cannot be."""
        if self._closed:
            raise _unavailable("the audit log is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((row, done))
        except asyncio.QueueFull:
            try:
                async with asyncio.timeout(self.push_timeout):
                    await self._queue.put((row, done))
            except TimeoutError:
                raise _unavailable("the audit queue is full") from None
        self._awaited += 1
        if self._lingering is not None:
            _wake(self._lingering)
        await done

    async def _linger(self) -> None:
        """Nobody waits for what is queued (completion rows): give it company for up to
        `LINGER` seconds, until a row someone waits for arrives. Commits of one row each
        would cost several times more per row."""
        loop = asyncio.get_running_loop()
        self._lingering = loop.create_future()
        timer = loop.call_later(LINGER, _wake, self._lingering)
        try:
            await self._lingering
        finally:
            timer.cancel()
            self._lingering = None

    async def _run(self) -> None:
        try:
            while True:
                first = await self._queue.get()
                if first is None:
                    return
                # Let the tasks that are ready to run add their rows first: under load that
                # makes one commit of many; idle, it costs one turn of the loop.
                await asyncio.sleep(0)
                if not self._awaited:
                    await self._linger()
                batch = [first]
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
                self._awaited -= sum(1 for _, done in batch if done is not None)
                await self._commit(batch)
                if stop:
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
        try:
            async with asyncio.timeout(10):
                if self._resync:
                    # A failed commit may have landed after all (the connection died after
                    # COMMIT was sent): continue from what the store holds, never fork.
                    head = await self.store.head(self.chain)
                    self._seq, self._prev = head if head is not None else (0, GENESIS)
                    self._resync = False
                rows = self._chain(batch)
                await self.store.append(rows)
        except Exception as exc:  # the writer must outlive any failure; callers are told, not crashed
            self._resync = True
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            log.error("audit: %d row(s) not written: %s", len(batch), self.last_error)
            for _, done in batch:
                if done is not None and not done.done():
                    done.set_exception(_unavailable(self.last_error))
            return
        self._seq, self._prev = rows[-1]["chain_seq"], rows[-1]["hash"]
        self.written += len(rows)
        self.last_error = None
        for _, done in batch:
            if done is not None and not done.done():
                done.set_result(None)
