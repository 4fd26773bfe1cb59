"""serve, stdio and check."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from dataclasses import replace
from functools import partial
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from sqlalchemy.engine import make_url

from .. import __version__, auth, logs
from ..errors import ConfigError, Problem
from ..identity import LOCAL, Principal
from ..policy import bundle as policy_bundle
from ..policy.snapshot import build
from ..sensitive import mask_urls
from ..settings import Settings
from ..store import current_revision, is_sqlite, open_engine
from ..store import state as state_store
from ..store.engine import HEAD
from ..text import escape
from .common import add_config, load_all, run_with_store, setup_logging, store_error, warn_unknown_servers

log = logging.getLogger("mcp_gateway")

KEY_ENV = "MCP_GATEWAY_KEY"
EXIT_NOT_STARTED = 3
"""`serve` could not listen or start: the same code as a store that cannot be reached."""


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve Streamable HTTP at /mcp (and the admin API)")
    add_config(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--allowed-host", dest="allowed_hosts", action="append", help="accept this Host header too")
    serve.add_argument("--allowed-origin", dest="allowed_origins", action="append", help="accept this Origin too")
    serve.add_argument("--policies", help="a directory of policy files to apply")
    serve.add_argument(
        "--watch", dest="watch_policies", action="store_const", const=True, help="re-apply policy files on change"
    )
    serve.add_argument(
        "--no-migrate", dest="migrate", action="store_const", const=False, help="do not upgrade the store on start"
    )
    serve.set_defaults(run=run_serve)

    stdio = sub.add_parser("stdio", help=f"serve one client on stdin/stdout (API key in ${KEY_ENV})")
    add_config(stdio)
    stdio.set_defaults(run=run_stdio)

    check = sub.add_parser("check", help="validate the config, connect to each upstream, print the catalog")
    add_config(check)
    check.set_defaults(run=run_check)


def check_policies(settings: Settings) -> None:
    """Refuse to start, with each problem at its file:line (exit 2), on a policy directory
    with errors and no live policy to fall back on: the gateway would only deny. With a
    live policy it starts on that one, and the errors are logged and shown in the status."""
    if settings.policies is None:
        return
    try:
        policy_bundle.load(settings.policies)
    except ConfigError:
        if run_with_store(settings, partial(live_policy_version, settings)) == 0:
            raise


async def live_policy_version(settings: Settings) -> int:
    """The store's live policy version, read without creating or migrating anything (0: none)."""
    url = settings.database_url or ""
    if is_sqlite(url):
        database = make_url(url).database or ""
        if database != ":memory:" and not await anyio.Path(database).exists():
            return 0
    engine = open_engine(url)
    try:
        if await current_revision(engine) != HEAD:
            return 0
        return build(await state_store.load(engine)).policy.policy_version
    finally:
        await engine.dispose()


def run_serve(args: argparse.Namespace) -> int:
    from ..app import create_app
    from ..transport import server as http_server

    config, settings = load_all(args)
    check_policies(settings)
    setup_logging(settings.log_level, settings)
    app = create_app(config, settings)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP explicitly: with proto=0 asyncio never sets TCP_NODELAY and small
    # responses stall ~40 ms behind delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return EXIT_NOT_STARTED
    host, port = sock.getsockname()[:2]
    log.info(
        "mcp-gateway %s: %d upstream(s), MCP at http://%s:%d/mcp, store %s",
        __version__,
        len(config.upstreams),
        host,
        port,
        mask_urls(settings.database_url or ""),
    )
    server = http_server.Server(http_server.config(app, settings.log_level, http_server.ConnectionLimits.of(settings)))
    logs.protect("uvicorn", "uvicorn.error")  # configured by uvicorn's Config just now
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn's way to say the lifespan did not start
        if app.startup_error is None:
            raise
    if app.startup_error is not None:
        raise store_error(settings, app.startup_error) from None
    return 0 if server.started else EXIT_NOT_STARTED


def run_stdio(args: argparse.Namespace) -> int:
    from ..runtime import running
    from ..transport.stdio import StdioServer

    config, settings = load_all(args)
    check_policies(settings)
    setup_logging(settings.log_level, settings)
    key = os.environ.get(KEY_ENV)
    if settings.auth == "oauth":
        message = "`mcp-gateway stdio` authenticates with an API key: use auth: keys+oauth (or keys)"
        raise ConfigError([Problem("settings", None, message)])
    if settings.auth != "none" and not key:
        raise ConfigError([Problem("environment", None, f"{KEY_ENV} is not set: the gateway needs an API key")])

    async def main() -> None:
        async with running(config, settings) as gateway:

            def principal() -> Principal | None:
                if settings.auth == "none":
                    return LOCAL
                snapshot = gateway.snapshots.current
                found = auth.principal_for(key or "", snapshot.keys, snapshot.principals)
                # Which key, so revoking it ends this session (see killswitch.py).
                return replace(found, key_id=auth.key_id_of(key or "")) if found is not None else None

            if principal() is None:
                raise ConfigError([Problem("environment", None, f"{KEY_ENV} is not a valid API key")])
            await gateway.wait_ready(5.0)
            server = StdioServer(gateway.router, principal, _ByteIn(sys.stdin.buffer), _ByteOut(sys.stdout.buffer))
            await server.serve()

    run_with_store(settings, main)
    return 0


class _ByteIn(ByteReceiveStream):
    """stdin as an anyio byte stream, read in a worker thread."""

    def __init__(self, file: Any) -> None:
        self._file = file

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data: bytes = await anyio.to_thread.run_sync(self._file.read1, max_bytes, abandon_on_cancel=True)
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        return None


class _ByteOut(ByteSendStream):
    """stdout as an anyio byte stream; writes are small and flushed at once."""

    def __init__(self, file: Any) -> None:
        self._file = file

    async def send(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()

    async def aclose(self) -> None:
        # The descriptor itself, so the client sees the end of the session (sys.stdout's
        # file object never closes fd 1).
        self._file.flush()
        os.close(self._file.fileno())


def run_check(args: argparse.Namespace) -> int:
    """Read-only: the config, the policy files and the store are checked, never changed. The
    upstreams are started against a throwaway store, so nothing is migrated, applied or audited."""
    import tempfile

    from ..runtime import running

    config, settings = load_all(args)
    setup_logging("warning")
    print(f"config: {config.path} ({len(config.upstreams)} upstreams)")
    if settings.policies is not None:
        bundle = policy_bundle.load(settings.policies)
        print(f"policies: {settings.policies}: {len(bundle.rules)} rule(s) for {len(bundle.teams)} team(s)")
        warn_unknown_servers(bundle, config)
    print(f"store: {run_with_store(settings, partial(describe_store, settings))}")

    async def main(scratch: str) -> int:
        throwaway = settings.model_copy(
            update={"database_url": f"sqlite:///{scratch}/check.db", "policies": None, "watch_policies": False}
        )
        async with running(config, throwaway) as gateway:
            timeout = max((u.connect_timeout for u in config.upstreams.values()), default=0.0)
            await gateway.wait_ready(timeout)
            status = 0
            for upstream in gateway.upstreams.values():
                print(f"\n{upstream.name}: {upstream.state} {upstream.protocol_version}".rstrip())
                if upstream.state not in ("ready", "disabled"):
                    print(f"  error: {escape(mask_urls(upstream.last_error or 'did not connect in time'))}")
                    status = 1
            snapshot = gateway.router.catalog.snapshot
            for kind in ("tools", "prompts", "resources", "templates"):
                names = [e.get("uriTemplate") or e.get("uri") or e.get("name") for e in snapshot.listing(kind)]
                print(f"\n{kind} ({len(names)}):")
                for name in names:
                    print(f"  {escape(str(name))}")  # named by the upstream
            for conflict in snapshot.conflicts:
                print(f"\nerror: {escape(conflict)}", file=sys.stderr)
                status = 1
            return status

    with tempfile.TemporaryDirectory(prefix="mcp-gateway-check-") as scratch:
        return run_with_store(settings, partial(main, scratch))


async def describe_store(settings: Settings) -> str:
    """The store's state, read without creating or migrating anything. A schema that is
    not current fails the check when `serve` would not migrate it either."""
    url = settings.database_url or ""
    shown = mask_urls(url)
    revision: str | None = None
    exists = True
    if is_sqlite(url):
        database = make_url(url).database or ""
        exists = database == ":memory:" or await anyio.Path(database).exists()
    if exists:
        engine = open_engine(url)
        try:
            revision = await current_revision(engine)
        finally:
            await engine.dispose()
    if revision != HEAD and not settings.migrate:
        raise ConfigError([Problem(shown, None, "the store's schema is not current: run `mcp-gateway db upgrade`")])
    if not exists:
        return f"{shown}: does not exist yet (`serve` or `db upgrade` creates it)"
    if revision is None:
        return f"{shown}: empty (`serve` or `db upgrade` creates the schema)"
    if revision != HEAD:
        return f"{shown}: at revision {revision}, not current (`serve` or `db upgrade` migrates it)"
    return f"{shown}: at revision {revision} (current)"
