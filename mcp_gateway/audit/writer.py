"""The single audit writer: group commit from a bounded queue, hash-chained.

Callers enqueue rows; one task drains whatever is waiting into one transaction, chains
the rows, commits, and wakes the callers that wait for their commit. The queue is
bounded: when it is full a caller waits briefly, then gets `AuditUnavailable`, and a call
that cannot be audited is not made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import Denied
from ..store import audit as store
from .chain import GENESIS, row_hash

log = logging.getLogger(__name__)

BATCH = 512


class AuditUnavailable(Denied):
    """The audit row could not be committed; the call it described does not happen."""


@dataclass(eq=False)
class _Pending:
    row: dict[str, Any]
    done: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None


class AuditWriter:
    """Appends rows to one chain of the audit table."""

    def __init__(self, engine: AsyncEngine, chain: str, queue_size: int = 10_000, push_timeout: float = 1.0) -> None:
        self.engine = engine
        self.chain = chain
        self.push_timeout = push_timeout
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](queue_size)
        self._seq = 0
        self._prev = GENESIS
        self._resync = False
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stopped = anyio.Event()

    async def start(self, tg: TaskGroup) -> None:
        head = await store.chain_head(self.engine, self.chain)
        if head is not None:
            self._seq, self._prev = head
        tg.start_soon(self._run)

    async def drain(self, timeout: float = 5.0) -> None:
        """Stop taking rows and wait (up to `timeout`) for the queued ones to be written."""
        self._send.close()
        with anyio.move_on_after(timeout, shield=True):
            await self._stopped.wait()

    async def append(self, row: dict[str, Any], *, wait: bool) -> None:
        """Queue a row; with `wait`, return only once it is committed (or raise `AuditUnavailable`)."""
        pending = _Pending(row)
        try:
            self._send.send_nowait(pending)
        except anyio.WouldBlock:
            queued = False
            with anyio.move_on_after(self.push_timeout):
                await self._send.send(pending)
                queued = True
            if not queued:
                raise AuditUnavailable(
                    "the call was not made: the audit queue is full", {"reason": "audit unavailable"}
                ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise AuditUnavailable("the audit log is closed", {"reason": "audit unavailable"}) from None
        if not wait:
            return
        await pending.done.wait()
        if pending.error is not None:
            raise AuditUnavailable(
                "the call was not made: its audit record could not be written",
                {"reason": "audit unavailable", "detail": pending.error},
            )

    async def _run(self) -> None:
        try:
            await self._drain_queue()
        finally:
            self._stopped.set()

    def _chain(self, batch: list[_Pending]) -> list[dict[str, Any]]:
        seq, prev = self._seq, self._prev
        rows = []
        for pending in batch:
            seq += 1
            row = {**pending.row, "chain": self.chain, "chain_seq": seq, "prev_hash": prev}
            row["hash"] = prev = row_hash(row)
            rows.append(row)
        return rows

    async def _drain_queue(self) -> None:
        async with self._receive:
            while True:
                try:
                    first = await self._receive.receive()
                except anyio.EndOfStream:
                    return
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            with anyio.fail_after(10):
                if self._resync:
                    # A failed commit may have landed after all (the connection died after
                    # COMMIT was sent): continue from what the store holds, never fork.
                    head = await store.chain_head(self.engine, self.chain)
                    self._seq, self._prev = head if head is not None else (0, GENESIS)
                    self._resync = False
                rows = self._chain(batch)
                await store.append(self.engine, rows)
        except Exception as exc:  # the writer must outlive any failure; callers are told, not crashed
            self._resync = True
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            log.error("audit: %d row(s) not written: %s", len(batch), self.last_error)
            for pending in batch:
                pending.error = self.last_error
                pending.done.set()
            return
        self._seq, self._prev = rows[-1]["chain_seq"], rows[-1]["hash"]
        self.written += len(rows)
        self.last_error = None
        for pending in batch:
            pending.done.set()
