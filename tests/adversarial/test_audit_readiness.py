"""A gateway that cannot write its audit denies every call, so it is not ready: `/readyz`
answers 503 (the reason in the details an admin sees), and 200 again once rows can be
written, whether the store became unwritable while serving or already was at the start,
and whether or not a call came to find out (an idle gateway probes its store).

Real stores made unwritable for real: a SQLite file made immutable (`chattr +i`: tests run
as root, for whom permission bits stop no write), a PostgreSQL role without INSERT on the
audit table, and PostgreSQL behind a black-holed forwarder."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import asyncpg
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.errors import GATEWAY_DENIED
from mcp_gateway.store import open_engine, upgrade

from ..audit.common import cli, rows_of
from ..stores import PG_HOST, PG_PORT, PG_USER, postgres_database
from ..support import ADMIN_TOKEN, GatewayProcess, TcpProxy, agent, recorder_upstream, serve, wait_ready, write_config

pytestmark = pytest.mark.anyio

BOUND = 30.0
"""Generous: how long a test waits for a state it expects, before calling it a failure."""


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def _can_make_immutable(directory: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    probe = directory / "immutable-probe"
    probe.write_text("")
    try:
        _chattr("+i", probe)
    except subprocess.CalledProcessError:
        return False
    _chattr("-i", probe)
    return True


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """The files can be read but not written, by anyone (root included)."""
    present = [p for p in paths if p.exists()]
    _chattr("+i", *present)
    try:
        yield
    finally:
        _chattr("-i", *present)


async def readiness(base: str, token: str | None = None) -> httpx2.Response:
    """`/readyz`; with no token, as a caller the admin API would not serve (in `auth: none`
    mode a loopback caller is one, so this one names another host)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {"Host": "prober.example"}
    async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
        return await http.get(f"{base}/readyz")


async def until_readiness(base: str, status: int, bound: float = BOUND) -> httpx2.Response:
    """`/readyz` as an admin sees it, once it answers `status` with every upstream connected."""
    with anyio.fail_after(bound):
        while True:
            try:
                response = await readiness(base, ADMIN_TOKEN)
                if response.status_code == status and all(u["state"] == "ready" for u in response.json()["upstreams"]):
                    return response
            except httpx2.TransportError:
                pass
            await anyio.sleep(0.1)


async def denial_of(url: str, text: str) -> str | None:
    """The reason a call is denied, or None if it is answered."""
    async with agent(url) as client:
        try:
            await client.call_tool("rec__record", {"text": text})
        except MCPError as exc:
            assert exc.error.code == GATEWAY_DENIED, exc.error
            return str(exc.error.data["reason"])
    return None


def audit_reason(response: httpx2.Response) -> str:
    body = response.json()
    assert body["audit"]["writable"] is False, body
    [reason] = [r for r in body["reasons"] if "audit" in r]
    return str(reason)


@pytest.fixture
def sqlite_dir(tmp_path: Path) -> Path:
    if not _can_make_immutable(tmp_path):
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE)")
    return tmp_path


def _started(gateway: GatewayProcess) -> None:
    """Start a `serve` process without waiting for it to be ready."""
    with gateway.log.open("wb") as log:
        gateway.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mcp_gateway",
                "serve",
                "--config",
                str(gateway.config),
                "--port",
                str(gateway.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def test_a_gateway_whose_sqlite_file_becomes_read_only_is_not_ready_until_it_can_write_again(
    sqlite_dir: Path,
) -> None:
    db = sqlite_dir / "gateway.db"
    config = write_config(
        sqlite_dir, {"rec": recorder_upstream(sqlite_dir / "calls.log")}, database_url=f"sqlite:///{db}"
    )
    gateway = GatewayProcess(config)
    await gateway.start()
    base = gateway.url.rsplit("/mcp", 1)[0]
    try:
        assert await denial_of(gateway.url, "before") is None
        with immutable(db, db.with_name(db.name + "-wal")):
            assert await denial_of(gateway.url, "read-only") == "audit unavailable"
            response = await until_readiness(base, 503)
            assert "disk I/O error" in audit_reason(response) or "readonly" in audit_reason(response)
            anyone = await readiness(base)
            assert anyone.status_code == 503 and anyone.json() == {"status": "not ready"}
        await until_readiness(base, 200)  # no call needed: the writer tries again by itself
        assert await denial_of(gateway.url, "after") is None
    finally:
        gateway.stop()
    assert (sqlite_dir / "calls.log").read_text().splitlines() == ["before", "after"]


async def test_a_gateway_started_on_a_read_only_sqlite_file_is_not_ready_and_denies_every_call(
    sqlite_dir: Path,
) -> None:
    db = sqlite_dir / "gateway.db"
    config = write_config(
        sqlite_dir, {"rec": recorder_upstream(sqlite_dir / "calls.log")}, database_url=f"sqlite:///{db}"
    )
    first = GatewayProcess(config)
    await first.start()  # creates and migrates the store, applies the policies
    first.stop()
    gateway = GatewayProcess(config)
    base = gateway.url.rsplit("/mcp", 1)[0]
    with immutable(db, db.with_name(db.name + "-wal")):
        _started(gateway)
        try:
            response = await until_readiness(base, 503)
            assert "readonly" in audit_reason(response), response.json()
            assert await denial_of(gateway.url, "read-only") == "audit unavailable"
            assert (await readiness(base)).status_code == 503
        except BaseException:
            gateway.stop()
            raise
    try:
        await until_readiness(base, 200)
        assert await denial_of(gateway.url, "writable") is None
    finally:
        gateway.stop()


@asynccontextmanager
async def role_without_audit_insert() -> AsyncIterator[tuple[str, str, asyncpg.Connection]]:
    """A migrated database, a login role that may do everything there but INSERT into the
    audit table; yields the role's URL, its name, and a superuser connection to the database."""
    role = f"gw_role_{secrets.token_hex(4)}"
    async with postgres_database() as url:
        engine = open_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        database = url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
        try:
            await admin.execute(f"CREATE ROLE {role} LOGIN")
            await admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
            await admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
            await admin.execute(f"REVOKE INSERT ON audit FROM {role}")
            yield f"postgresql://{role}@{PG_HOST}:{PG_PORT}/{database}", role, admin
        finally:
            await admin.close()
    cleanup = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await cleanup.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        await cleanup.close()


async def test_a_gateway_whose_postgres_role_may_not_insert_audit_rows_is_not_ready_until_granted(
    tmp_path: Path,
) -> None:
    async with role_without_audit_insert() as (url, role, admin):
        config = write_config(tmp_path, {"rec": recorder_upstream(tmp_path / "calls.log")}, database_url=url)
        gateway = GatewayProcess(config)
        base = gateway.url.rsplit("/mcp", 1)[0]
        _started(gateway)
        try:
            response = await until_readiness(base, 503)
            assert "permission denied" in audit_reason(response), response.json()
            assert await denial_of(gateway.url, "revoked") == "audit unavailable"
            await admin.execute(f"GRANT INSERT ON audit TO {role}")
            await until_readiness(base, 200)
            assert await denial_of(gateway.url, "granted") is None
        finally:
            gateway.stop()
    assert (tmp_path / "calls.log").read_text().splitlines() == ["granted"]


async def test_a_gateway_whose_postgres_is_black_holed_turns_not_ready_when_its_audit_cannot_commit(
    tmp_path: Path,
) -> None:
    # The snapshot's staleness bound is far away: what makes it not ready is the audit.
    async with anyio.create_task_group() as tg, postgres_database() as pg_url:
        proxy = TcpProxy(PG_HOST, PG_PORT)
        await tg.start(proxy.run)
        config = write_config(
            tmp_path,
            {"rec": recorder_upstream(tmp_path / "calls.log")},
            database_url=pg_url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}"),
            snapshot_max_age=600.0,
            store_timeout=1.0,
        )
        try:
            async with serve(config) as (url, gw):
                await wait_ready(gw)
                base = url.rsplit("/mcp", 1)[0]
                try:
                    assert await denial_of(url, "before") is None
                    proxy.black_hole()
                    assert await denial_of(url, "partitioned") == "audit unavailable"
                    response = await until_readiness(base, 503)
                    assert "audit" in " ".join(response.json()["reasons"])
                finally:
                    proxy.heal()
                await until_readiness(base, 200)
                assert await denial_of(url, "healed") is None
        finally:
            proxy.cut()
            tg.cancel_scope.cancel()
    assert (tmp_path / "calls.log").read_text().splitlines() == ["before", "healed"]


PROBE_INTERVAL = 0.5
"""`audit_probe_interval` in the idle tests: short, so that waiting a few of them is quick."""

IDLE_BOUND = 10.0
"""How long an idle gateway may take to see its store change: the interval and the probe,
with room for a noisy machine. Without the idle probe it never does."""


def _outage_lines(log: Path) -> tuple[int, int]:
    """How many times the gateway's log said the audit store stopped and started taking rows."""
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text
    return text.count("audit: the store does not take rows"), text.count("audit: the store takes rows again")


async def _verified(config: Path, url: str) -> None:
    """The chain verifies, and the probes left no row behind."""
    verified = cli(config, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    engine = open_engine(url)
    try:
        rows = await rows_of(engine)
    finally:
        await engine.dispose()
    assert rows and not [r for r in rows if r["kind"] == "probe" or r["chain_seq"] == 0]


async def test_an_idle_gateway_whose_sqlite_file_becomes_read_only_turns_not_ready_without_a_call(
    sqlite_dir: Path,
) -> None:
    db = sqlite_dir / "gateway.db"
    config = write_config(
        sqlite_dir,
        {"rec": recorder_upstream(sqlite_dir / "calls.log")},
        database_url=f"sqlite:///{db}",
        audit_probe_interval=PROBE_INTERVAL,
    )
    gateway = GatewayProcess(config)
    await gateway.start()
    base = gateway.url.rsplit("/mcp", 1)[0]
    try:
        await until_readiness(base, 200)
        with immutable(db, db.with_name(db.name + "-wal")):
            response = await until_readiness(base, 503, IDLE_BOUND)  # no call made: the probe saw it
            assert "readonly" in audit_reason(response) or "disk I/O error" in audit_reason(response)
            await anyio.sleep(4 * PROBE_INTERVAL)  # more probes, all failing: no more lines
        await until_readiness(base, 200, IDLE_BOUND)
        assert await denial_of(gateway.url, "after") is None
    finally:
        gateway.stop()
    assert (sqlite_dir / "calls.log").read_text().splitlines() == ["after"]
    assert _outage_lines(gateway.log) == (1, 1)
    await _verified(config, f"sqlite:///{db}")


async def test_an_idle_gateway_whose_postgres_role_loses_insert_on_the_audit_turns_not_ready_without_a_call(
    tmp_path: Path,
) -> None:
    async with role_without_audit_insert() as (url, role, admin):
        await admin.execute(f"GRANT INSERT ON audit TO {role}")
        config = write_config(
            tmp_path,
            {"rec": recorder_upstream(tmp_path / "calls.log")},
            database_url=url,
            audit_probe_interval=PROBE_INTERVAL,
        )
        gateway = GatewayProcess(config)
        await gateway.start()
        base = gateway.url.rsplit("/mcp", 1)[0]
        try:
            await until_readiness(base, 200)
            await admin.execute(f"REVOKE INSERT ON audit FROM {role}")
            response = await until_readiness(base, 503, IDLE_BOUND)  # no call made: the probe saw it
            assert "permission denied" in audit_reason(response), response.json()
            await anyio.sleep(4 * PROBE_INTERVAL)
            await admin.execute(f"GRANT INSERT ON audit TO {role}")
            await until_readiness(base, 200, IDLE_BOUND)
            assert await denial_of(gateway.url, "granted") is None
        finally:
            gateway.stop()
        assert _outage_lines(gateway.log) == (1, 1)
        await _verified(config, url)
    assert (tmp_path / "calls.log").read_text().splitlines() == ["granted"]
