"""Truncation of the audit log is caught: `audit verify` prints each chain's head and,
against an anchor written before, fails on a chain that lost rows from its end; a
cleanly stopped gateway closes its chain with an end row. On both stores."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mcp_gateway.audit.anchor import Mark
from mcp_gateway.audit.verify import verify
from mcp_gateway.store import open_engine, upgrade
from mcp_gateway.store import tables as t

from ..support import GatewayProcess, admin_client, serve, write_config
from .common import OLD, cli, config_for, forge_after, rows_of, write_chain

pytestmark = pytest.mark.anyio

ROWS = 10


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = open_engine(store_url)
    await upgrade(engine)
    await write_chain(store_url, "replica-a", [OLD + i for i in range(ROWS)])
    await write_chain(store_url, "replica-b", [OLD + i for i in range(ROWS)], end=True)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _delete(engine: AsyncEngine, seq: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.delete(t.audit).where(t.audit.c.seq == seq))


async def test_verify_prints_each_chains_state_rows_last_seq_and_last_hash(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    a, b = await rows_of(engine, "replica-a"), await rows_of(engine, "replica-b")
    result = cli(config_for(tmp_path, store_url), "verify")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"ok: {2 * ROWS + 1} row(s) in 2 chain(s) verified"
    assert lines[1] == (
        f"chain replica-a: open, {ROWS} row(s) verified from its first row, last seq {ROWS}, last hash {a[-1]['hash']}"
    )
    assert b[-1]["kind"] == "end"
    assert lines[2] == (
        f"chain replica-b: ended, {ROWS + 1} row(s) verified from its first row, "
        f"last seq {ROWS + 1}, last hash {b[-1]['hash']}"
    )


async def test_verify_against_an_anchor_fails_once_the_newest_row_of_a_chain_is_deleted(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    config = config_for(tmp_path, store_url)
    anchor = tmp_path / "anchor.json"
    written = cli(config, "anchor", "--out", str(anchor))
    assert written.returncode == 0, written.stderr
    newest = (await rows_of(engine, "replica-b"))[-1]
    assert cli(config, "verify", "--expect", str(anchor)).returncode == 0

    await _delete(engine, newest["seq"])
    plain = cli(config, "verify")
    assert plain.returncode == 0  # what a chain alone cannot show...
    assert "chain replica-b: open" in plain.stdout  # ...though it no longer ends cleanly
    expected = cli(config, "verify", "--expect", str(anchor))
    assert expected.returncode == 1
    assert expected.stderr.splitlines() == [
        f"FAILED: chain replica-b: ends at #{ROWS} where the anchor has #{ROWS + 1}: 1 row(s) were deleted from its end"
    ]


async def test_verify_against_an_anchor_fails_when_the_anchored_row_was_replaced(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    config = config_for(tmp_path, store_url)
    anchor = tmp_path / "anchor.json"
    assert cli(config, "anchor", "--out", str(anchor)).returncode == 0
    rows = await rows_of(engine, "replica-a")
    await _delete(engine, rows[-1]["seq"])
    await forge_after(engine, rows[-2], OLD + 100)  # same length, another last row, valid links
    assert cli(config, "verify").returncode == 0
    expected = cli(config, "verify", "--expect", str(anchor))
    assert expected.returncode == 1
    assert "chain replica-a: its row #10 is not the anchored one" in expected.stderr


async def test_verify_from_an_anchor_reads_only_the_rows_after_it_and_catches_an_edit_there(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    config = config_for(tmp_path, store_url)
    anchor = tmp_path / "anchor.json"
    assert cli(config, "anchor", "--out", str(anchor)).returncode == 0
    await write_chain(store_url, "replica-a", [OLD + 50 + i for i in range(3)])
    incremental = cli(config, "verify", "--from-anchor", str(anchor))
    assert incremental.returncode == 0, incremental.stderr
    # The anchored row itself, then the 3 rows after it; replica-b has nothing new.
    assert incremental.stdout.splitlines()[0] == "ok: 5 row(s) in 2 chain(s) verified"
    assert f"chain replica-a: open, 4 row(s) verified from the anchor at #{ROWS}, last seq {ROWS + 3}" in (
        incremental.stdout
    )

    newer = (await rows_of(engine, "replica-a"))[ROWS + 1]
    async with engine.begin() as conn:
        await conn.execute(sa.update(t.audit).where(t.audit.c.seq == newer["seq"]).values(decision="deny"))
    edited = cli(config, "verify", "--from-anchor", str(anchor))
    assert edited.returncode == 1
    assert f"first bad row: row seq={newer['seq']} (chain replica-a #{ROWS + 2})" in edited.stderr


async def test_verify_from_an_anchor_fails_when_the_anchored_row_was_edited(engine: AsyncEngine) -> None:
    rows = await rows_of(engine, "replica-a")
    mark = Mark("replica-a", rows[4]["chain_seq"], rows[4]["hash"])
    assert (await verify(engine, start_at={"replica-a": mark})).ok
    async with engine.begin() as conn:
        await conn.execute(sa.update(t.audit).where(t.audit.c.seq == rows[4]["seq"]).values(tool="other"))
    report = await verify(engine, start_at={"replica-a": mark})
    assert report.first is not None and report.first.seq == rows[4]["seq"]
    assert "edited" in report.first.message


async def test_a_chain_missing_from_the_store_fails_against_its_anchor(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.delete(t.audit).where(t.audit.c.chain == "replica-b"))
    report = await verify(engine, expect={"replica-b": Mark("replica-b", 3, "0" * 64)})
    assert [str(p) for p in report.problems] == [
        "chain replica-b: is anchored at #3 but has no rows left: the chain was deleted"
    ]


async def test_verify_can_save_an_anchor_that_the_next_verify_starts_from(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    config = config_for(tmp_path, store_url)
    anchor = tmp_path / "last.json"
    assert cli(config, "verify", "--save-anchor", str(anchor)).returncode == 0
    saved = json.loads(anchor.read_text())
    assert [(c["chain"], c["seq"], c["state"]) for c in saved["chains"]] == [
        ("replica-a", ROWS, "open"),
        ("replica-b", ROWS + 1, "ended"),
    ]
    again = cli(config, "verify", "--from-anchor", str(anchor), "--save-anchor", str(anchor))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("ok: 2 row(s) in 2 chain(s) verified")


@pytest.mark.parametrize("content", ["not json", '{"format": "something else", "chains": []}', None])
async def test_an_anchor_that_cannot_be_read_is_one_error_line_and_exit_2(
    engine: AsyncEngine, store_url: str, tmp_path: Path, content: str | None
) -> None:
    anchor = tmp_path / "anchor.json"
    if content is not None:
        anchor.write_text(content)
    result = cli(config_for(tmp_path, store_url), "verify", "--expect", str(anchor))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {anchor}: "), result.stderr


async def test_a_cleanly_stopped_gateway_ends_its_chain_and_a_killed_one_leaves_it_open(
    store_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {}, database_url=store_url, policies=None)
    clean = GatewayProcess(config, env={"MCP_GATEWAY_REPLICA_ID": "clean"})
    killed = GatewayProcess(config, env={"MCP_GATEWAY_REPLICA_ID": "killed"})
    await clean.start()
    await killed.start()
    for gateway in (clean, killed):  # an admin action: one audited row in each chain
        async with admin_client(gateway.url) as admin:
            engaged = await admin.post("/kill-switches", json={"scope": "global", "reason": "chain test"})
            assert engaged.status_code == 201, engaged.text
    clean.stop()  # SIGTERM: a clean stop
    assert killed.process is not None
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait(10)
    killed.process = None
    result = cli(config, "verify")
    assert result.returncode == 0, result.stderr
    heads = {line.split(":")[0]: line for line in result.stdout.splitlines()[1:]}
    assert heads["chain clean"].startswith("chain clean: ended")
    assert heads["chain killed"].startswith("chain killed: open")


async def test_the_admin_api_gives_the_current_anchor(store_url: str, tmp_path: Path) -> None:
    engine = open_engine(store_url)
    await upgrade(engine)
    await write_chain(store_url, "replica-old", [OLD, OLD + 1], end=True)
    await engine.dispose()
    config = write_config(tmp_path, {}, database_url=store_url, policies=None, replica_id="live")
    async with serve(config) as (url, _), admin_client(url) as admin:
        response = await admin.get("/audit/anchor")
    assert response.status_code == 200
    anchor = response.json()
    assert anchor["format"] == "mcp-gateway audit anchor"
    assert [(c["chain"], c["seq"], c["state"]) for c in anchor["chains"]] == [("replica-old", 3, "ended")]


async def test_verify_from_an_anchor_names_where_a_chain_cut_short_now_ends(engine: AsyncEngine) -> None:
    rows = await rows_of(engine, "replica-a")
    mark = Mark("replica-a", rows[-1]["chain_seq"], rows[-1]["hash"])
    for row in rows[-3:]:
        await _delete(engine, row["seq"])
    report = await verify(engine, start_at={"replica-a": mark})
    assert [str(p) for p in report.problems] == [
        f"chain replica-a: ends at #{ROWS - 3} where the anchor has #{ROWS}: 3 row(s) were deleted from its end"
    ]
    head = next(h for h in report.heads if h.chain == "replica-a")
    assert (head.last_seq, head.last_hash) == (rows[-4]["chain_seq"], rows[-4]["hash"])


async def test_audit_commands_on_a_store_not_yet_upgraded_say_to_upgrade_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = open_engine(url)
    await upgrade(engine)
    async with engine.begin() as conn:  # as a store at 0003 is: no checkpoints yet
        await conn.execute(sa.text("DROP TABLE audit_checkpoints"))
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0003'"))
    await engine.dispose()
    config = config_for(tmp_path, url)
    for command in (["verify"], ["anchor"], ["prune", "--before", "30d"]):
        result = cli(config, *command)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"error: {url}: the store's schema is not current: run `mcp-gateway db upgrade`"
        ], result.stderr
