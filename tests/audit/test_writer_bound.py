"""The audit wait is bounded: a caller whose row is not committed within the writer's
timeout is refused then, and if the row lands afterwards the log says the call was not
forwarded.

The store here is a stand-in whose commit the test holds or breaks at will (a real
partition is in tests/adversarial/test_store_partition.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from mcp_gateway.audit.writer import AuditWriter
from mcp_gateway.errors import AuditUnavailable

pytestmark = pytest.mark.anyio


class HeldStore:
    """Commits when the test lets it; can fail *after* committing, as a connection that
    dies once COMMIT was sent does."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.release = anyio.Event()
        self.lose_answer = False

    async def head(self, chain: str) -> tuple[int, str] | None:
        return (self.rows[-1]["chain_seq"], self.rows[-1]["hash"]) if self.rows else None

    async def append(self, rows: Sequence[dict[str, Any]]) -> None:
        await self.release.wait()
        self.rows.extend(rows)
        if self.lose_answer:
            self.lose_answer = False
            raise ConnectionResetError("the connection died after COMMIT was sent")

    async def probe(self, row: dict[str, Any]) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _decision(call_id: str, decision: str = "allow") -> dict[str, Any]:
    return {
        "ts": 1_800_000_000.0,
        "kind": "decision",
        "call_id": call_id,
        "principal_id": "p",
        "team_id": "t",
        "server": "s",
        "tool": "x",
        "method": "tools/call",
        "decision": decision,
        "reason": "because" if decision == "deny" else None,
    }


def _kinds(store: HeldStore) -> list[tuple[Any, ...]]:
    return [(r["kind"], r["call_id"], r["outcome"]) for r in store.rows]


async def test_a_row_committed_after_its_wait_ended_is_refused_and_then_marked_not_forwarded() -> None:
    store = HeldStore()
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(store, "c", timeout=0.3)  # type: ignore[arg-type]
        await writer.start(tg)
        with anyio.fail_after(5), pytest.raises(AuditUnavailable) as refused:
            await writer.append(_decision("late"))
        assert refused.value.data is not None and refused.value.data["reason"] == "audit unavailable"
        store.release.set()
        with anyio.fail_after(5):
            while len(store.rows) < 2:
                await anyio.sleep(0.01)
        await writer.drain()
    assert _kinds(store) == [("decision", "late", None), ("completion", "late", "not_forwarded")]


async def test_a_batch_that_committed_though_its_answer_was_lost_is_marked_not_forwarded() -> None:
    store = HeldStore()
    store.release.set()
    store.lose_answer = True
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(store, "c", timeout=1.0)  # type: ignore[arg-type]
        await writer.start(tg)
        with anyio.fail_after(5), pytest.raises(AuditUnavailable):
            await writer.append(_decision("lost"))
        with anyio.fail_after(5):
            await writer.append(_decision("next"))
            while len(store.rows) < 3:
                await anyio.sleep(0.01)
        await writer.drain()
    assert sorted(_kinds(store), key=str) == sorted(
        [("decision", "lost", None), ("completion", "lost", "not_forwarded"), ("decision", "next", None)], key=str
    )
    assert [r["chain_seq"] for r in store.rows] == [1, 2, 3]  # continued from what landed, no fork


async def test_denials_the_audit_cannot_take_are_logged_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    store = HeldStore()
    caplog.set_level(logging.WARNING, logger="mcp_gateway.audit.writer")
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(store, "c", timeout=0.2)  # type: ignore[arg-type]
        await writer.start(tg)

        async def denied(i: int) -> None:
            with pytest.raises(AuditUnavailable):
                await writer.append(_decision(f"d{i}", "deny"))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as callers:
                for i in range(50):
                    callers.start_soon(denied, i)
        store.release.set()
        await writer.drain()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("audit unavailable: call")]
    assert 0 < len(lines) <= 20
    assert all("denied, not audited" in line and "because" in line for line in lines)


class RefusingStore(HeldStore):
    """Refuses every write (commit and probe) while `refusing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release.set()
        self.refusing = True

    async def append(self, rows: Sequence[dict[str, Any]]) -> None:
        if self.refusing:
            raise PermissionError("permission denied for table audit")
        await super().append(rows)

    async def probe(self, row: dict[str, Any]) -> None:
        if self.refusing:
            raise PermissionError("permission denied for table audit")


async def test_a_writer_whose_store_refuses_rows_is_unhealthy_from_the_start_and_healthy_again_by_itself() -> None:
    store = RefusingStore()
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(store, "c", timeout=0.5)  # type: ignore[arg-type]
        await writer.start(tg)
        assert not writer.healthy and "permission denied" in (writer.last_error or "")
        with anyio.fail_after(5), pytest.raises(AuditUnavailable):
            await writer.append(_decision("refused"))
        store.refusing = False
        with anyio.fail_after(5):  # no row is appended meanwhile: the writer tries by itself
            while not writer.healthy:
                await anyio.sleep(0.02)
        await writer.append(_decision("taken"))
        await writer.drain()
    assert _kinds(store) == [("decision", "taken", None)]


class CountingStore(RefusingStore):
    """Counts probes; notes whether a probe and a commit were ever under way at once."""

    def __init__(self, probe_seconds: float = 0.0) -> None:
        super().__init__()
        self.refusing = False
        self.probes = 0
        self.probe_seconds = probe_seconds
        self.busy = False
        self.overlapped = False

    async def _exclusive(self, work: Any) -> None:
        self.overlapped |= self.busy
        self.busy = True
        try:
            await work
        finally:
            self.busy = False

    async def append(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._exclusive(RefusingStore.append(self, rows))

    async def probe(self, row: dict[str, Any]) -> None:
        self.probes += 1
        await self._exclusive(anyio.sleep(self.probe_seconds))
        await RefusingStore.probe(self, row)


async def until(condition: Any) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0.01)


async def test_an_idle_writer_probes_by_itself_so_its_health_follows_the_store() -> None:
    store = CountingStore()
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(store, "c", timeout=0.5, probe_interval=0.1)  # type: ignore[arg-type]
        await writer.start(tg)
        assert writer.healthy
        store.refusing = True  # no row is appended: only a probe can find out
        await until(lambda: not writer.healthy)
        assert "permission denied" in (writer.last_error or "")
        store.refusing = False
        await until(lambda: writer.healthy)
        await writer.drain()
    assert store.rows == []


async def test_a_writer_whose_rows_commit_never_probes() -> None:
    store = CountingStore()
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(store, "c", timeout=0.5, probe_interval=0.2)  # type: ignore[arg-type]
        await writer.start(tg)
        for i in range(40):  # a row every 20 ms for 0.8 s: commits tell the writer it is healthy
            await writer.append(_decision(f"c{i}"))
            await anyio.sleep(0.02)
        busy_probes = store.probes
        await until(lambda: store.probes > busy_probes)  # idle now: it probes again
        await writer.drain()
    assert busy_probes == 1  # the one at start


async def test_the_store_never_sees_a_probe_and_a_commit_at_once() -> None:
    store = CountingStore(probe_seconds=0.05)
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(store, "c", timeout=1.0, probe_interval=0.01)  # type: ignore[arg-type]
        await writer.start(tg)
        for i in range(30):  # rows arrive while probes are under way
            await writer.append(_decision(f"c{i}"))
            await anyio.sleep(0.03)
        await writer.drain()
    assert store.probes > 1 and len(store.rows) == 30
    assert not store.overlapped


async def test_a_writer_stopped_while_probing_stops_at_once_and_leaves_no_task() -> None:
    store = CountingStore()
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(store, "c", timeout=0.5, probe_interval=0.01)  # type: ignore[arg-type]
        await writer.start(tg)
        store.probe_seconds = 3600.0  # the next probe is one the store never answers
        await until(lambda: store.busy)
        started = anyio.current_time()
        await writer.drain(timeout=60, end=True)
        assert anyio.current_time() - started < 5
    # Leaving the task group proves no task of the writer's is left.
    assert [r["kind"] for r in store.rows] == ["end"]
