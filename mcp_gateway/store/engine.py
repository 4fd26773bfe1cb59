"""Opening the store: the URL, the engine, the schema migrations.

SQLite (WAL, through aiosqlite) is the embedded default, a file beside the config;
PostgreSQL (asyncpg) carries several replicas. Migrations are Alembic's, run in-process
on start (`serve` does it unless told not to) or with `mcp-gateway db upgrade`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import ConfigError, Problem
from . import bounds

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATION_LOCK = 724_511_093
"""PostgreSQL advisory lock id: replicas starting together migrate one at a time."""

HEAD = "0008"
"""The newest migration. A store already there is not handed to Alembic at all, which
keeps Alembic out of a running gateway's memory (a test holds this equal to Alembic's head)."""


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("the Alembic migrations directory is missing from this installation")


def normalize_url(url: str) -> str:
    """Pick the async driver for a plain `sqlite:` or `postgresql:` URL."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif driver in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


SQLITE_CACHE_KIB = 512
"""Page cache of each SQLite connection (`PRAGMA cache_size`; SQLite's default is 2,000 KiB).
A running gateway holds seven (the pool's five, the audit writer's two), each in a thread
of its own but one, so the default grows RSS by up to 14 MiB as the store grows (measured:
+12 MiB for five connections reading a 5 MB store); at 512 KiB the bound is 3.5 MiB, and
the operating system's file cache keeps the rest of the store at hand."""


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _unbound(info: dict[Any, Any]) -> None:
    watchdog = info.pop("watchdog", None)
    if watchdog is not None:
        watchdog.cancel()


def _bound(engine: AsyncEngine, timeout: float) -> None:
    """Bound every use of a pooled connection, from checkout to checkin, by `timeout`:
    past it the connection is abandoned (see `bounds`), so the work fails instead of
    hanging, and a transaction in it dies uncommitted with the session.

    The pool's own pre-ping is not used: it runs before the checkout event, outside any
    watchdog, and once asyncpg's statement timeout fires the ping's ROLLBACK waits for the
    server to acknowledge the cancel, which a partition never does. The ping here runs
    under the watchdog; a pooled connection that fails it is replaced by a new one."""

    def connected(dbapi_connection: Any, record: Any) -> None:
        bounds.harden(dbapi_connection.driver_connection, timeout)
        record.info["fresh"] = True

    def checkout(dbapi_connection: Any, record: Any, _: Any) -> None:
        conn = dbapi_connection.driver_connection
        record.info["watchdog"] = bounds.Watchdog(conn, timeout)
        if record.info.pop("fresh", False):
            return
        try:
            dbapi_connection.ping()  # runs on the event loop: checkout happens inside SQLAlchemy's greenlet
        except Exception as exc:
            _unbound(record.info)
            bounds.abandon(conn)
            raise DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc

    def checkin(_: Any, record: Any) -> None:
        _unbound(record.info)

    event.listen(engine.sync_engine, "connect", connected)
    event.listen(engine.sync_engine, "checkout", checkout)
    event.listen(engine.sync_engine, "checkin", checkin)


def open_engine(url: str, timeout: float | None = None) -> AsyncEngine:
    """The store's engine. With `timeout` (the running gateway's `store_timeout`), every
    PostgreSQL operation is bounded by it; without (the CLI), only by the server."""
    url = normalize_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).parent.is_dir():
            # A path into a directory that is not there is more often a typo or a volume
            # not mounted than a wish for new directories.
            raise ConfigError(
                [Problem(database, None, f"the store's directory {Path(database).parent} does not exist")]
            )
        engine = create_async_engine(url, pool_size=5, max_overflow=10)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if timeout is None:
        return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    engine = create_async_engine(url, pool_size=10, max_overflow=20, connect_args=bounds.connect_options(timeout))
    _bound(engine, timeout)
    return engine


def alembic_config(connection: Connection | None = None, url: str | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", normalize_url(url))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        # A migration may outlast the bounds set for the gateway's own work.
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
        connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to the latest revision."""
    if await current_revision(engine) == HEAD:
        return
    async with engine.begin() as connection:
        # A migration may rightly take longer than any call should.
        _unbound((await connection.get_raw_connection()).info)
        await connection.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The store's schema revision (None for an empty store)."""
    async with engine.connect() as connection:
        try:
            row = (await connection.execute(text("SELECT version_num FROM alembic_version"))).first()
        except DBAPIError:
            return None
    return str(row[0]) if row is not None else None
