"""What the subcommands share: loading config and settings, logging, the store."""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import logs
from ..config import Config, load
from ..policy.bundle import Bundle
from ..sensitive import mask_urls
from ..settings import Settings, settings_for
from ..store import is_sqlite, open_engine, upgrade

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store could not be reached or read; the message is one line, the URL masked."""


STORE_ERRORS = (DBAPIError, OSError)
"""What a store that is down or refusing raises: SQLAlchemy wraps the driver's errors,
except that asyncpg's connect raises the socket's `OSError` (refused, timed out) bare."""


def leaf(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups, which task groups add."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def unavailable(url: str | None, exc: BaseException) -> StoreUnavailable:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return StoreUnavailable(f"the store {mask_urls(url or '')} cannot be used: {mask_urls(reason)}")


def store_error(settings: Settings, exc: BaseException) -> BaseException:
    """What to report for `exc`: the store's failures as `StoreUnavailable`, others unwrapped."""
    error = leaf(exc)
    if isinstance(error, STORE_ERRORS) and not isinstance(error, BrokenPipeError):
        return unavailable(settings.database_url, error)
    return error


def run_with_store(settings: Settings, main: Callable[[], Awaitable[T]]) -> T:
    """`anyio.run(main)`, with the store's failures as `StoreUnavailable`: one line, not a traceback."""
    try:
        return anyio.run(main)
    except BaseException as exc:
        error = store_error(settings, exc)
        if error is exc:
            raise
        raise error from None


def default_config() -> Path:
    """`$MCP_GATEWAY_CONFIG`, else ./gateway.yaml, else the bundled example configuration."""
    env = os.environ.get("MCP_GATEWAY_CONFIG")
    if env:
        return Path(env)
    local = Path("gateway.yaml")
    if local.exists():
        return local
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "examples" / "gateway.yaml", here.parent / "examples" / "gateway.yaml"):
        if candidate.exists():
            return candidate
    return local


def config_at_hand(args: argparse.Namespace) -> Config | None:
    """The config named by `--config`, `$MCP_GATEWAY_CONFIG` or ./gateway.yaml; not the
    bundled example, which says nothing about the operator's upstreams."""
    if getattr(args, "config", None):
        return load(Path(args.config))
    env = os.environ.get("MCP_GATEWAY_CONFIG")
    if env:
        return load(Path(env))
    local = Path("gateway.yaml")
    return load(local) if local.exists() else None


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="config file (default: $MCP_GATEWAY_CONFIG, ./gateway.yaml, the example)")
    p.add_argument("--database-url", dest="database_url", help="the store (default: SQLite beside the config)")
    p.add_argument(
        "--log-level",
        dest="log_level",
        choices=["debug", "info", "warning", "error"],
        help="%(choices)s (default info)",
    )
    p.add_argument("--log-format", dest="log_format", choices=["text", "json"], help="%(choices)s (default text)")


OVERRIDES = (
    "host",
    "port",
    "log_level",
    "log_format",
    "allowed_hosts",
    "allowed_origins",
    "database_url",
    "migrate",
    "policies",
    "watch_policies",
    "auth",
)


def load_all(args: argparse.Namespace) -> tuple[Config, Settings]:
    path = Path(args.config) if getattr(args, "config", None) else default_config()
    config = load(path)
    overrides: dict[str, Any] = {name: getattr(args, name, None) for name in OVERRIDES}
    return config, settings_for(config, **overrides)


def warn_unknown_servers(bundle: Bundle, config: Config) -> None:
    """Rules whose `servers:` match no upstream of the config: a typo, or a server not yet
    added. Warned, not refused, since policy may lead the config."""
    names = sorted(config.upstreams)
    for rule in bundle.rules:
        for pattern in rule.servers:
            if pattern != "*" and not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                have = ", ".join(names) or "none"
                print(
                    f"warning: rule {rule.id!r} (team {rule.team}) names server {pattern!r}, "
                    f"which {config.path} does not configure (it has: {have})",
                    file=sys.stderr,
                )


def setup_logging(level: str, settings: Settings | None = None) -> None:
    if settings is None:
        logs.setup(level)
    else:
        logs.setup(level, settings.log_format, settings.access_log)


def _must_exist(url: str) -> None:
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).exists():
            raise StoreUnavailable(f"the store {database} does not exist (`mcp-gateway db upgrade` creates it)")


@asynccontextmanager
async def store(settings: Settings, migrate: bool = True) -> AsyncIterator[AsyncEngine]:
    """The store, migrated, for one command. Without `migrate` nothing is created: a
    SQLite file that does not exist is an error, not a new empty store."""
    assert settings.database_url is not None
    if not migrate:
        _must_exist(settings.database_url)
    engine = open_engine(settings.database_url)
    try:
        if migrate:
            await upgrade(engine)
        yield engine
    finally:
        await engine.dispose()
