"""An attacker's and an on-call engineer's review of the audit's anchors, checkpoints and
retention: rows placed where `audit verify` does not walk, prunes that race, and a prune
time that deletes more than meant. Real stores (a SQLite file and PostgreSQL), the real
writer, the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from mcp_gateway.audit import anchor as anchors
from mcp_gateway.audit.chain import GENESIS, link
from mcp_gateway.audit.retention import prune
from mcp_gateway.audit.verify import verify
from mcp_gateway.audit.writer import AuditWriter
from mcp_gateway.errors import AuditUnavailable
from mcp_gateway.store import open_engine, retention, upgrade
from mcp_gateway.store import tables as t
from mcp_gateway.store.audit import SqliteAppender, appender, checkpoints

from ..audit.common import OLD, cli, config_for, row, rows_of, write_chain
from ..stores import PG_ADMIN_DB, PG_HOST, PG_PORT, PG_USER, postgres_database
from ..support import TcpProxy, write_config

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = open_engine(store_url)
    await upgrade(engine)
    await write_chain(store_url, "replica-a", [OLD + i for i in range(10)])
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_forged_checkpoint_over_rows_still_present_fails_verify(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    # A checkpoint at #5 holding row #5's hash: verify would start at #6 and never read #1..#5,
    # which stay in the table (and in every query and export) free to be edited.
    rows = await rows_of(engine, "replica-a")
    fifth = rows[4]
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(t.audit_checkpoints).values(
                chain="replica-a",
                chain_seq=5,
                hash=fifth["hash"],
                ts=fifth["ts"],
                kind=fifth["kind"],
                rows=5,
                pruned_at=time.time(),
                actor="attacker",
            )
        )
        await conn.execute(sa.update(t.audit).where(t.audit.c.seq == rows[1]["seq"]).values(principal_id="t/someone"))
    verified = cli(config_for(tmp_path, store_url), "verify")
    assert verified.returncode == 1, verified.stdout
    assert "(chain replica-a #1)" in verified.stderr


async def test_a_row_inserted_at_position_zero_fails_verify(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    # A row linked as the writer's probe is (chain_seq 0, after the genesis hash): shown by
    # `audit tail` and `audit export` as a real decision, skipped by a walk from #1.
    forged = link(row(OLD - 1, 7), "replica-a", 0, GENESIS)
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t.audit).values(**forged))
    verified = cli(config_for(tmp_path, store_url), "verify")
    assert verified.returncode == 1, verified.stdout
    assert "(chain replica-a #0)" in verified.stderr


async def test_a_chain_made_only_of_rows_at_position_zero_fails_verify(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    forged = link(row(OLD - 1, 7), "replica-forged", 0, GENESIS)
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t.audit).values(**forged))
    verified = cli(config_for(tmp_path, store_url), "verify")
    assert verified.returncode == 1, verified.stdout
    assert "(chain replica-forged #0)" in verified.stderr


async def test_a_prune_planned_before_another_prune_never_moves_the_checkpoint_back(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    # Two prunes overlapping (the CLI while a replica's retention runs; on SQLite nothing
    # keeps them apart): one planned from the checkpoint at #2 to cut at #4, the other cut
    # at #7 first. Moving the checkpoint back to #4 would leave #5..#7 missing after it.
    await prune(engine, OLD + 2, actor="first")
    stale = await checkpoints(engine)
    planned = (await rows_of(engine, "replica-a"))[1]
    assert planned["chain_seq"] == 4
    await prune(engine, OLD + 7, actor="first")
    with pytest.raises(retention.CheckpointMoved):
        await retention.cut(engine, "replica-a", planned, stale["replica-a"], "second")
    assert (await checkpoints(engine))["replica-a"]["chain_seq"] == 7
    verified = cli(config_for(tmp_path, store_url), "verify")
    assert verified.returncode == 0, verified.stderr


async def test_a_first_prune_planned_before_another_prune_leaves_the_chain_to_it(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    planned = (await rows_of(engine, "replica-a"))[2]
    await prune(engine, OLD + 7, actor="first")
    with pytest.raises(retention.CheckpointMoved):
        await retention.cut(engine, "replica-a", planned, None, "second")
    assert (await checkpoints(engine))["replica-a"]["chain_seq"] == 7
    verified = cli(config_for(tmp_path, store_url), "verify")
    assert verified.returncode == 0, verified.stderr


async def test_a_prune_whose_checkpoint_moved_meanwhile_deletes_nothing_past_it(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    # The second prune planned from the checkpoint at #2 to cut at #9; the first moved it to #4 meanwhile.
    await prune(engine, OLD + 2, actor="first")
    stale = await checkpoints(engine)
    planned = (await rows_of(engine, "replica-a"))[-2]
    await prune(engine, OLD + 4, actor="first")
    with pytest.raises(retention.CheckpointMoved):
        await retention.cut(engine, "replica-a", planned, stale["replica-a"], "second", batch=2)
    verified = cli(config_for(tmp_path, store_url), "verify")
    assert verified.returncode == 0, verified.stderr


async def test_a_prune_time_in_the_future_is_refused_and_nothing_is_pruned(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    # Epoch milliseconds where seconds were meant: a time some 50,000 years ahead, before
    # which every row (the ones being written now among them) lies.
    millis = str(int(time.time() * 1000))
    pruned = cli(config_for(tmp_path, store_url), "prune", "--before", millis)
    assert pruned.returncode == 2
    assert "future" in pruned.stderr and "Traceback" not in pruned.stderr
    assert len(await rows_of(engine, "replica-a")) == 10


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """Answers the kill switch POST with a redirect elsewhere, and records what reaches there."""

    seen: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.send_response(302)
        self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        body = json.dumps({"id": 1, "scope": "global"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_kill_command_follows_no_redirect_with_the_admin_token_nor_reports_one_as_engaged(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = write_config(tmp_path, {}, policies=None)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        command = [sys.executable, "-m", "mcp_gateway", "kill", "--global", "--reason", "drill"]
        done = subprocess.run(
            [*command, "--config", str(config), "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MCP_GATEWAY_ADMIN_TOKEN": "secret-admin-token"},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert _Redirecting.seen == []  # the token went nowhere but the gateway's URL
    assert done.returncode != 0
    assert "engaged" not in done.stdout
    assert "302" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("column", "value"), [("subject", None), ("issuer", None), ("subject", "someone-else")])
async def test_clearing_or_changing_a_rows_identity_breaks_its_hash(
    store_url: str, tmp_path: Path, column: str, value: str | None
) -> None:
    # `subject` and `issuer` are hashed only when set: a row that had them must not verify
    # once they are cleared (its hash covered them), nor once they are changed.
    engine = open_engine(store_url)
    await upgrade(engine)
    try:
        async with anyio.create_task_group() as tg:
            writer = AuditWriter(appender(store_url), "replica-oauth")
            await writer.start(tg)
            for i in range(3):
                writer.append_nowait({**row(OLD + i, i), "subject": f"user-{i}", "issuer": "https://idp.example"})
            await writer.drain(end=True)
        target = (await rows_of(engine, "replica-oauth"))[1]
        async with engine.begin() as conn:
            await conn.execute(sa.update(t.audit).where(t.audit.c.seq == target["seq"]).values({column: value}))
    finally:
        await engine.dispose()
    verified = cli(config_for(tmp_path, store_url), "verify")
    assert verified.returncode == 1, verified.stdout
    assert "(chain replica-oauth #2): its content does not match its hash" in verified.stderr


async def test_a_clean_stop_during_a_burst_writes_every_queued_row_before_the_end_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    engine = open_engine(url)
    await upgrade(engine)
    try:
        async with anyio.create_task_group() as tg:
            writer = AuditWriter(appender(url), "replica-burst")
            await writer.start(tg)
            for i in range(3000):  # several batches still queued when the stop comes
                writer.append_nowait(row(OLD + i, i))
            await writer.drain(end=True)
        rows = await rows_of(engine, "replica-burst")
    finally:
        await engine.dispose()
    assert [r["chain_seq"] for r in rows] == list(range(1, 3002))
    assert [r["kind"] for r in rows[:-1]] == ["decision"] * 3000
    assert rows[-1]["kind"] == "end"
    assert rows[-1]["detail"] == "stopped cleanly after 3000 row(s) from this process"


class _HeldAppender(SqliteAppender):
    """A SQLite file whose commits wait until the test lets them through: a store slower
    than the callers' wait."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()

    async def append(self, rows: Sequence[dict[str, Any]]) -> None:
        await self.gate.wait()
        await super().append(rows)


async def test_a_call_denied_while_its_row_was_committing_at_a_clean_stop_is_recorded_before_the_end_row(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    engine = open_engine(url)
    await upgrade(engine)
    store = _HeldAppender(str(tmp_path / "gateway.db"))
    try:
        async with anyio.create_task_group() as tg:
            writer = AuditWriter(store, "replica-stop", timeout=0.05)
            await writer.start(tg)
            decision = {**row(OLD, 1), "call_id": "c1", "decision": "allow"}
            with pytest.raises(AuditUnavailable):
                await writer.append(decision)  # the caller gave up waiting: its call was denied
            stopping = asyncio.ensure_future(writer.drain(end=True))
            await asyncio.sleep(0)  # the end row is queued behind the decision's commit
            store.gate.set()
            await stopping
        rows = await rows_of(engine, "replica-stop")
    finally:
        await engine.dispose()
    assert [(r["kind"], r["outcome"]) for r in rows] == [
        ("decision", None),
        ("completion", "not_forwarded"),
        ("end", "ended"),
    ]


@pytest.mark.parametrize("force", [False, True])
def test_init_never_writes_through_a_symlink_planted_in_the_directory(tmp_path: Path, force: bool) -> None:
    # A link where init writes gateway.yaml, pointing out of the directory: to a file not
    # there yet (it "does not exist", so no --force was needed), or to one that is.
    target = tmp_path / "gw"
    target.mkdir()
    outside = tmp_path / "outside.txt"
    if force:
        outside.write_text("keep me\n")
    (target / "gateway.yaml").symlink_to(outside)
    command = [sys.executable, "-m", "mcp_gateway", "init", str(target), *(["--force"] if force else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if force:
        assert done.returncode == 0, done.stderr
        assert outside.read_text() == "keep me\n"
        assert not (target / "gateway.yaml").is_symlink()
    else:
        assert done.returncode == 2
        assert "exists already" in done.stderr
        assert not outside.exists()


async def test_a_prune_killed_mid_way_leaves_a_verifiable_chain_and_a_complete_export(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    for chunk in range(3):  # 15,010 rows in all: several batches of the cut
        await write_chain(store_url, "replica-k", [OLD + 100 + chunk * 5000 + i for i in range(5000)])
    before = await rows_of(engine)
    config = config_for(tmp_path, store_url)
    first = tmp_path / "first.jsonl"
    command = [sys.executable, "-m", "mcp_gateway", "audit", "prune", "--before", str(OLD + 10**6)]
    process = subprocess.Popen([*command, "--export", str(first), "--config", str(config)])
    try:
        while process.poll() is None:  # killed once replica-k's first batch is cut (or it ends first)
            if "replica-k" in await checkpoints(engine):
                process.kill()
                break
            await anyio.sleep(0.005)
    finally:
        process.wait(60)
    verified = cli(config, "verify")
    assert verified.returncode == 0, verified.stderr
    exported = [json.loads(line) for line in first.read_text().splitlines()]
    assert [r["seq"] for r in exported] == sorted(r["seq"] for r in before)  # synced before any deletion
    # The rest goes with a second prune; between the two exports every row pruned is there.
    second = tmp_path / "second.jsonl"
    assert cli(config, "prune", "--before", str(OLD + 10**6), "--export", str(second)).returncode == 0
    assert cli(config, "verify").returncode == 0
    again = {json.loads(line)["seq"] for line in second.read_text().splitlines()} if second.exists() else set()
    assert {r["seq"] for r in exported} | again == {r["seq"] for r in before}
    assert await rows_of(engine) == []


async def test_verify_from_an_older_anchor_still_fails_a_chain_cut_short_of_the_expected_one(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    # --from-anchor last week's (where the walk starts), --expect today's off-site one: the
    # tail cut between the two is what --expect is there to catch.
    config = config_for(tmp_path, store_url)
    rows = await rows_of(engine, "replica-a")
    older, newer = tmp_path / "older.json", tmp_path / "newer.json"
    for path, mark in ((older, rows[2]), (newer, rows[-1])):
        heads = {"replica-a": {"chain_seq": mark["chain_seq"], "hash": mark["hash"], "kind": mark["kind"]}}
        path.write_bytes(anchors.dumps(anchors.document(heads, time.time())))
    async with engine.begin() as conn:
        await conn.execute(sa.delete(t.audit).where(t.audit.c.seq.in_([r["seq"] for r in rows[-3:]])))
    verified = cli(config, "verify", "--from-anchor", str(older), "--expect", str(newer))
    assert verified.returncode == 1, verified.stdout
    assert "ends at #7 where the anchor has #10" in verified.stderr


async def test_a_prune_cut_off_by_a_postgresql_partition_fails_within_its_bound_and_leaves_a_verifiable_chain(
    tmp_path: Path,
) -> None:
    async with anyio.create_task_group() as tg, postgres_database() as url:
        proxy = TcpProxy(PG_HOST, PG_PORT)
        await tg.start(proxy.run)
        direct = open_engine(url)
        await upgrade(direct)
        for chunk in range(3):
            await write_chain(url, "replica-p", [OLD + chunk * 5000 + i for i in range(5000)])
        before = await rows_of(direct)
        # The gateway's own engine (bounded by store_timeout), as its retention uses it.
        behind = open_engine(url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}"), timeout=2.0)
        export = tmp_path / "export.jsonl"
        failed: list[BaseException] = []

        async def pruning() -> None:
            try:
                await prune(behind, OLD + 10**6, export=export, actor="retention (replica-p)")
            except Exception as exc:  # what the retention loop catches and warns about
                failed.append(exc)

        try:
            with anyio.fail_after(60):  # a hang guard, not a timing assertion
                async with anyio.create_task_group() as inner:
                    inner.start_soon(pruning)
                    while "replica-p" not in await checkpoints(direct):
                        await anyio.sleep(0.005)
                    proxy.black_hole()
            assert failed and isinstance(failed[0], (SQLAlchemyError, OSError, TimeoutError)), failed
            proxy.heal()
            report = await verify(direct)
            assert report.ok, [str(p) for p in report.problems]
            exported = [json.loads(line)["seq"] for line in export.read_text().splitlines()]
            assert exported == [r["seq"] for r in before]
            # Healed: the next prune takes the rest.
            await prune(behind, OLD + 10**6, actor="retention (replica-p)")
            assert await rows_of(direct) == []
            assert (await verify(direct)).ok
        finally:
            proxy.heal()
            await behind.dispose()
            await direct.dispose()
            proxy.cut()


async def test_a_prune_while_the_writer_appends_leaves_every_chain_verifiable(
    engine: AsyncEngine, store_url: str, tmp_path: Path
) -> None:
    for chunk in range(2):
        await write_chain(store_url, "replica-w", [OLD + 100 + chunk * 5000 + i for i in range(5000)])
    written = 0
    async with anyio.create_task_group() as tg:
        writer = AuditWriter(appender(store_url), "replica-w")
        await writer.start(tg)
        pruning = asyncio.ensure_future(prune(engine, OLD + 10**6, actor="cli (test)"))
        while not pruning.done():  # new rows (now) keep coming while the old ones go
            await writer.append(row(time.time(), written))
            written += 1
        await writer.drain(end=True)
    pruned = pruning.result()
    assert pruned.rows == 10_010 and not pruned.raced
    report = await verify(engine)
    assert report.ok, [str(p) for p in report.problems]
    assert len(await rows_of(engine, "replica-w")) == written + 1  # every new row, and the end row


def test_init_into_a_path_that_is_a_file_is_one_error_line(tmp_path: Path) -> None:
    target = tmp_path / "gw"
    target.write_text("not a directory\n")
    done = subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "init", str(target)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: cannot write {target}: File exists"]
    assert target.read_text() == "not a directory\n"


async def test_a_prune_whose_lock_connection_the_server_refuses_fails_as_a_store_error(tmp_path: Path) -> None:
    # PostgreSQL restarting, or at its connection limit, refuses the prune lock's own
    # connection while the engine's pooled ones still work: the retention loop must see a
    # store failure it warns about (and the CLI one it names), not an unexpected error.
    async with postgres_database() as url:
        engine = open_engine(url)
        try:
            await upgrade(engine)
            await write_chain(url, "replica-l", [OLD + i for i in range(3)])
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))  # a pooled connection, kept
            name = url.rsplit("/", 1)[1]
            admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB)
            try:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                try:
                    with pytest.raises((SQLAlchemyError, OSError, TimeoutError)):
                        await prune(engine, OLD + 10, actor="retention (replica-l)")
                finally:
                    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            finally:
                await admin.close()
            assert len(await rows_of(engine, "replica-l")) == 3
        finally:
            await engine.dispose()
