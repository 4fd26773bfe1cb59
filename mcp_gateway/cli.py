"""The `mcp-gateway` command.

    mcp-gateway serve   [--config FILE] [--host H] [--port N] ...   Streamable HTTP at /mcp
    mcp-gateway stdio   [--config FILE]                             one client on stdin/stdout
    mcp-gateway check   [--config FILE]                             validate, connect, print the catalog

Exit status: 0 success, 1 a runtime failure (an upstream did not connect), 2 a usage or
configuration error (the message names the file, the line and what is wrong).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import anyio

from . import __version__
from .config import Config, load
from .errors import ConfigError
from .settings import Settings, load_settings

log = logging.getLogger("mcp_gateway")

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def default_config() -> Path:
    """`$MCP_GATEWAY_CONFIG`, else ./gateway.yaml, else the bundled example configuration."""
    env = os.environ.get("MCP_GATEWAY_CONFIG")
    if env:
        return Path(env)
    local = Path("gateway.yaml")
    if local.exists():
        return local
    here = Path(__file__).resolve().parent
    for candidate in (here / "examples" / "gateway.yaml", here.parent / "examples" / "gateway.yaml"):
        if candidate.exists():
            return candidate
    return local


def _load(args: argparse.Namespace) -> tuple[Config, Settings]:
    path = Path(args.config) if args.config else default_config()
    config = load(path)
    overrides = {
        name: getattr(args, name, None)
        for name in ("host", "port", "log_level", "allowed_hosts", "allowed_origins")
    }
    settings = load_settings(config.gateway, path, config.gateway_lines, **overrides)
    return config, settings


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # One line per upstream HTTP request would drown everything else.
    logging.getLogger("httpx2").setLevel(logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    config, settings = _load(args)
    _logging(settings.log_level)
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
        return EXIT_FAILURE
    host, port = sock.getsockname()[:2]
    log.info("mcp-gateway %s serving %d upstream(s) at http://%s:%d/mcp", __version__, len(config.upstreams), host, port)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=settings.log_level, lifespan="on", access_log=False, timeout_graceful_shutdown=5)
    )
    server.run(sockets=[sock])
    return 0


def _stdio(args: argparse.Namespace) -> int:
    from .identity import LOCAL
    from .runtime import running
    from .transport.stdio import StdioServer

    config, settings = _load(args)
    _logging(settings.log_level)

    async def main() -> None:
        async with running(config, settings) as gateway:
            await gateway.wait_ready(5.0)
            stdin = anyio.wrap_file(sys.stdin.buffer)
            server = StdioServer(gateway.router, LOCAL, _ByteIn(stdin), _ByteOut(sys.stdout.buffer))
            await server.serve()

    anyio.run(main)
    return 0


class _ByteIn:
    """stdin as an anyio byte stream, read in a worker thread."""

    def __init__(self, file: Any) -> None:
        self._file = file

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data: bytes = await self._file.read1(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        return None


class _ByteOut:
    """stdout as an anyio byte stream; writes are small and flushed at once."""

    def __init__(self, file: Any) -> None:
        self._file = file

    async def send(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()

    async def aclose(self) -> None:
        return None


def _check(args: argparse.Namespace) -> int:
    from .runtime import running

    config, settings = _load(args)
    _logging("warning")
    print(f"config: {config.path} ({len(config.upstreams)} upstreams)")

    async def main() -> int:
        async with running(config, settings) as gateway:
            timeout = max((u.connect_timeout for u in config.upstreams.values()), default=0.0)
            await gateway.wait_ready(timeout)
            status = 0
            for upstream in gateway.upstreams.values():
                state = upstream.state
                print(f"\n{upstream.name}: {state} {upstream.protocol_version}".rstrip())
                if state == "disabled":
                    continue
                if state != "ready":
                    print(f"  error: {upstream.last_error or 'did not connect in time'}")
                    status = EXIT_FAILURE
                    continue
            snapshot = gateway.router.catalog.snapshot
            for kind in ("tools", "prompts", "resources", "templates"):
                names = [e.get("uriTemplate") or e.get("uri") or e.get("name") for e in snapshot.listing(kind)]
                print(f"\n{kind} ({len(names)}):")
                for name in names:
                    print(f"  {name}")
            for conflict in snapshot.conflicts:
                print(f"\nerror: {conflict}", file=sys.stderr)
                status = EXIT_FAILURE
            return status

    return anyio.run(main)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-gateway", description="An MCP governance gateway.")
    parser.add_argument("--version", action="version", version=f"mcp-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", help="config file (default: $MCP_GATEWAY_CONFIG, ./gateway.yaml, the example)")
        p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])

    serve = sub.add_parser("serve", help="serve Streamable HTTP at /mcp")
    common(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--allowed-host", dest="allowed_hosts", action="append", help="accept this Host header too")
    serve.add_argument("--allowed-origin", dest="allowed_origins", action="append", help="accept this Origin too")
    serve.set_defaults(run=_serve)

    stdio = sub.add_parser("stdio", help="serve one client on stdin/stdout")
    common(stdio)
    stdio.set_defaults(run=_stdio)

    check = sub.add_parser("check", help="validate the config, connect to each upstream, print the catalog")
    common(check)
    check.set_defaults(run=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
