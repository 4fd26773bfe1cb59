"""What the subcommands share: loading config and settings, logging, the store."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .. import logs
from ..config import Config, load
from ..settings import Settings, settings_for
from ..store import open_engine, upgrade


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


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="config file (default: $MCP_GATEWAY_CONFIG, ./gateway.yaml, the example)")
    p.add_argument("--database-url", dest="database_url", help="the store (default: SQLite beside the config)")
    p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])


OVERRIDES = (
    "host",
    "port",
    "log_level",
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


def setup_logging(level: str) -> None:
    logs.setup(level)


@asynccontextmanager
async def store(settings: Settings, migrate: bool = True) -> AsyncIterator[AsyncEngine]:
    """The store, migrated, for one command."""
    assert settings.database_url is not None
    engine = open_engine(settings.database_url)
    try:
        if migrate:
            await upgrade(engine)
        yield engine
    finally:
        await engine.dispose()
