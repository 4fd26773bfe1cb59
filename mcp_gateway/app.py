"""The HTTP application: `create_app(config, settings)` returns an ASGI app whose lifespan
owns the gateway (upstream connections, router), with the MCP endpoint at `/mcp` and
health endpoints beside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .config import Config
from .identity import LOCAL, Principal
from .runtime import Gateway, running
from .settings import Settings
from .transport.http import HttpOptions, McpEndpoint
from .transport.security import HostCheck


def gateway_of(request: Request) -> Gateway:
    """The running gateway, for route handlers."""
    gateway: Gateway = request.app.state.gateway
    return gateway


async def _local(scope: Scope) -> Principal:
    return LOCAL


class _Mcp:
    """Hands `/mcp` straight to the endpoint the lifespan built."""

    def __init__(self) -> None:
        self.endpoint: McpEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.endpoint is not None, "the app's lifespan has not run"
        await self.endpoint(scope, receive, send)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    upstreams = [u.status() for u in gateway.upstreams.values()]
    ready = all(u["state"] in ("ready", "disabled") for u in upstreams)
    body: dict[str, Any] = {"status": "ready" if ready else "degraded", "upstreams": upstreams}
    conflicts = gateway.router.catalog.snapshot.conflicts
    if conflicts:
        body["conflicts"] = conflicts
    return JSONResponse(body, status_code=200)


def create_app(config: Config, settings: Settings) -> Starlette:
    """Build the gateway's ASGI app."""
    mcp = _Mcp()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(config, settings) as gateway:
            app.state.gateway = gateway
            hosts = HostCheck(settings.allowed_hosts, settings.allowed_origins, settings.dns_rebinding_protection)
            options = HttpOptions(settings.max_body_bytes, settings.session_idle_timeout, settings.max_sessions)
            mcp.endpoint = McpEndpoint(gateway.router, _local, hosts, gateway.tg, options)
            yield

    routes = [
        Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
