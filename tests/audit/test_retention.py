"""Retention keeps the audit verifiable: `audit prune` exports the rows it deletes, each
chain goes on from a checkpoint that `audit verify` starts at, an edit after the prune
point still fails, and nothing is deleted when the export or the chain is not sound.
On both stores."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mcp_gateway.audit.retention import PruneRefused, prune
from mcp_gateway.audit.verify import verify
from mcp_gateway.store import open_engine, retention, upgrade
from mcp_gateway.store import tables as t
from mcp_gateway.store.audit import checkpoints

from ..support import serve, write_config
from .common import OLD, cli, config_for, rows_of, write_chain

pytestmark = pytest.mark.anyio

CUT = OLD + 1000
"""Rows before this are pruned: 7 of replica-a's 12, replica-b's 4 but not its end row
(written when it stopped, now), all 3 of replica-c's: 14."""


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = open_engine(store_url)
    await upgrade(engine)
    await write_chain(store_url, "replica-a", [OLD + i for i in range(7)] + [CUT + i for i in range(5)])
    await write_chain(store_url, "replica-b", [OLD + 10 + i for i in range(4)], end=True)
    await write_chain(store_url, "replica-c", [OLD + 20 + i for i in range(3)])
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_prune_then_verify_passes_from_each_chains_checkpoint(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    config = config_for(tmp_path, store_url)
    pruned = cli(config, "prune", "--before", str(CUT))
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines()[0].startswith("pruned 14 row(s) before ")
    kept = [(r["chain"], r["chain_seq"]) for r in await rows_of(engine)]
    assert kept == [*(("replica-a", s) for s in range(8, 13)), ("replica-b", 5)]
    verified = cli(config, "verify")
    assert verified.returncode == 0, verified.stderr
    lines = verified.stdout.splitlines()
    assert lines[0] == "ok: 6 row(s) in 3 chain(s) verified"
    assert lines[1].startswith("chain replica-a: open, 5 row(s) verified from the checkpoint at #7, last seq 12")
    assert lines[2].startswith("chain replica-b: ended, 1 row(s) verified from the checkpoint at #4, last seq 5")
    # replica-c was pruned away entirely: its checkpoint is its head.
    assert lines[3].startswith("chain replica-c: open, 0 row(s) verified from the checkpoint at #3, last seq 3")


async def test_an_edited_row_after_the_prune_point_still_fails_verify(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    config = config_for(tmp_path, store_url)
    assert cli(config, "prune", "--before", str(CUT)).returncode == 0
    for index in (0, 3):  # the first row kept (it links to the checkpoint), and a later one
        target = (await rows_of(engine, "replica-a"))[index]
        original = target["decision"]
        async with engine.begin() as conn:
            await conn.execute(sa.update(t.audit).where(t.audit.c.seq == target["seq"]).values(decision="deny"))
        failed = cli(config, "verify")
        assert failed.returncode == 1
        assert f"first bad row: row seq={target['seq']} (chain replica-a #{target['chain_seq']})" in failed.stderr
        async with engine.begin() as conn:
            await conn.execute(sa.update(t.audit).where(t.audit.c.seq == target["seq"]).values(decision=original))


async def test_a_checkpoint_moved_by_hand_does_not_match_the_first_row_kept(engine: AsyncEngine) -> None:
    await prune(engine, CUT, actor="test")
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(t.audit_checkpoints).where(t.audit_checkpoints.c.chain == "replica-a").values(hash="f" * 64)
        )
    report = await verify(engine)
    assert report.first is not None and report.first.chain_seq == 8
    assert "does not link" in report.first.message


async def test_the_export_holds_exactly_the_pruned_rows(engine: AsyncEngine, store_url: str, tmp_path: Path) -> None:
    before = await rows_of(engine)
    export = tmp_path / "pruned.jsonl"
    result = cli(config_for(tmp_path, store_url), "prune", "--before", str(CUT), "--export", str(export))
    assert result.returncode == 0, result.stderr
    assert f"exported 14 row(s) to {export}" in result.stdout
    kept = {r["seq"] for r in await rows_of(engine)}
    exported = [json.loads(line) for line in export.read_text().splitlines()]
    deleted = [r for r in before if r["seq"] not in kept]
    assert sorted(exported, key=lambda r: r["seq"]) == sorted(deleted, key=lambda r: r["seq"])
    assert len(exported) == 14


async def test_a_prune_whose_export_cannot_be_written_deletes_nothing(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    before = await rows_of(engine)
    config = config_for(tmp_path, store_url)
    existing = tmp_path / "exists.jsonl"
    existing.write_text("an earlier export\n")
    for target in (existing, tmp_path / "no" / "such" / "dir.jsonl"):
        result = cli(config, "prune", "--before", str(CUT), "--export", str(target))
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "nothing was pruned" in lines[0]
    assert existing.read_text() == "an earlier export\n"
    assert await rows_of(engine) == before
    assert await checkpoints(engine) == {}


async def test_a_chain_that_does_not_verify_is_not_pruned(engine: AsyncEngine) -> None:
    before = await rows_of(engine)
    target = (await rows_of(engine, "replica-b"))[1]
    async with engine.begin() as conn:
        await conn.execute(sa.update(t.audit).where(t.audit.c.seq == target["seq"]).values(tool="edited"))
    with pytest.raises(PruneRefused, match=f"chain replica-b does not verify at row seq={target['seq']}"):
        await prune(engine, CUT, actor="test")
    after = await rows_of(engine)
    assert [r["seq"] for r in after] == [r["seq"] for r in before]


async def test_no_row_at_or_after_the_time_is_pruned_even_when_times_are_out_of_order(
    engine: AsyncEngine, store_url: str
) -> None:
    await write_chain(store_url, "jittery", [OLD, OLD + 1, CUT + 5, OLD + 2, OLD + 3])
    await prune(engine, CUT, actor="test")
    assert [r["chain_seq"] for r in await rows_of(engine, "jittery")] == [3, 4, 5]
    assert (await verify(engine)).ok


async def test_a_prune_in_many_batches_leaves_a_verifiable_chain(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(retention, "BATCH", 2)
    export = tmp_path / "pruned.jsonl"
    result = await prune(engine, CUT, export=export, actor="test")
    assert (result.rows, result.exported) == (14, 14)
    marks = await checkpoints(engine)
    assert {c: (m["chain_seq"], m["rows"]) for c, m in marks.items()} == {
        "replica-a": (7, 7),
        "replica-b": (4, 4),
        "replica-c": (3, 3),
    }
    assert (await verify(engine)).ok
    again = await prune(engine, CUT + 2, actor="test")  # a second prune moves the checkpoint on
    assert again.chains == {"replica-a": 2}
    assert (await checkpoints(engine))["replica-a"]["rows"] == 9
    assert (await verify(engine)).ok


async def test_a_chain_pruned_away_entirely_goes_on_from_its_checkpoint(engine: AsyncEngine, store_url: str) -> None:
    await prune(engine, CUT, actor="test")
    assert await rows_of(engine, "replica-c") == []
    await write_chain(store_url, "replica-c", [CUT + 50])  # the same replica id, started again
    assert [r["chain_seq"] for r in await rows_of(engine, "replica-c")] == [4]
    report = await verify(engine)
    assert report.ok, report.problems


async def test_a_prune_time_may_be_a_duration_back_from_now(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    config = config_for(tmp_path, store_url)
    result = cli(config, "prune", "--before", "30d")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pruned 19 row(s) before ")  # every row years old (all but the end row)
    bad = cli(config, "prune", "--before", "30 days")
    assert bad.returncode == 2 and "is neither" in bad.stderr and "Traceback" not in bad.stderr


async def test_a_gateway_with_audit_retention_prunes_and_audits_it(store_url: str, tmp_path: Path) -> None:
    engine = open_engine(store_url)
    await upgrade(engine)
    try:
        await write_chain(store_url, "old-replica", [OLD + i for i in range(5)])
        exports = tmp_path / "exports"
        exports.mkdir()
        config = write_config(
            tmp_path,
            {},
            database_url=store_url,
            policies=None,
            replica_id="live",
            audit_retention="1d",
            audit_prune_interval=0.2,
            audit_retention_export="exports",
        )
        async with serve(config):
            with anyio.fail_after(30):
                while "old-replica" not in await checkpoints(engine):
                    await anyio.sleep(0.05)
        assert [r["kind"] for r in await rows_of(engine, "old-replica")] == []
        live = await rows_of(engine, "live")
        assert live[0]["method"] == "audit.prune" and live[0]["kind"] == "admin"
        files = sorted(exports.iterdir())
        assert len(files) == 1 and len(files[0].read_text().splitlines()) == 5
        report = await verify(engine)
        assert report.ok, report.problems
    finally:
        await engine.dispose()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)  # SQLite's writes take turns by themselves
async def test_a_second_prune_waits_its_turn_on_postgresql(engine: AsyncEngine) -> None:
    holder = await retention.pg_lock(engine)
    try:
        with pytest.raises(PruneRefused, match="another prune is running"):
            await prune(engine, CUT, actor="test")
    finally:
        await retention.pg_unlock(holder)
    assert (await prune(engine, CUT, actor="test")).rows == 14


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)  # the lock is PostgreSQL's
async def test_the_prune_lock_outlasts_the_gateways_idle_transaction_bound(engine: AsyncEngine, store_url: str) -> None:
    bounded = open_engine(store_url, timeout=0.5)  # as the gateway opens it: idle in transaction ends at 0.5 s
    try:
        holder = await retention.pg_lock(bounded)
        try:
            await anyio.sleep(1.5)
            with pytest.raises(PruneRefused, match="another prune is running"):
                await prune(engine, CUT, actor="test")
        finally:
            await retention.pg_unlock(holder)
    finally:
        await bounded.dispose()


def test_a_retention_that_is_not_a_duration_is_a_config_error_naming_the_forms() -> None:
    from mcp_gateway.errors import ConfigError
    from mcp_gateway.settings import load_settings

    assert load_settings({"audit_retention": "30d"}).audit_retention_seconds == 30 * 86400
    assert load_settings({}).audit_retention_seconds is None  # off by default
    with pytest.raises(ConfigError) as raised:
        load_settings({"audit_retention": "30 days"}, lines={"audit_retention": 7})
    [problem] = raised.value.problems
    assert (problem.line, problem.message) == (
        7,
        "gateway.audit_retention: '30 days' is not a duration: a whole number and a unit, s, m, h, d or w "
        "(90m, 12h, 30d)",
    )


async def test_an_anchor_taken_before_a_prune_still_holds_where_it_can_be_checked(engine: AsyncEngine) -> None:
    from mcp_gateway.audit.anchor import Mark
    from mcp_gateway.store.audit import heads

    before = {c: Mark(c, h["chain_seq"], h["hash"]) for c, h in (await heads(engine)).items()}
    await prune(engine, CUT, actor="test")
    report = await verify(engine, start_at=before)
    assert report.ok, report.problems
    # replica-c's anchored row (its head, #3) became its checkpoint: compared, and equal.
    assert report.notes == []
    early = {"replica-a": Mark("replica-a", 2, (await heads(engine))["replica-a"]["hash"])}
    report = await verify(engine, expect=early)
    assert report.ok and report.notes == ["chain replica-a: the anchored row #2 has since been pruned (checkpoint #7)"]
    forged = {"replica-c": Mark("replica-c", 3, "e" * 64)}
    report = await verify(engine, expect=forged)
    assert [str(p) for p in report.problems] == [
        "chain replica-c: its checkpoint at #3 does not hold the anchored hash"
    ]
