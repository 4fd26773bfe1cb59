"""The HTTP application: `create_app(config, settings)` returns an ASGI app whose lifespan
owns the gateway (store, snapshot, audit writer, upstream connections, router), with the
MCP endpoint at `/mcp`, the admin API under `/admin/api`, and health endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import auth
from .admin import admin_routes
from .admin.common import NO_TOKEN, actor_for
from .config import Config
from .errors import ConfigError, Problem
from .identity import LOCAL, Principal
from .middleware.hosts import HostCheckMiddleware
from .runtime import Gateway, running
from .settings import Settings
from .transport.http import Authenticate, HttpOptions, McpEndpoint
from .transport.security import HostCheck

log = logging.getLogger(__name__)

_UNAUTHORIZED = [(b"www-authenticate", b'Bearer realm="mcp-gateway"')]
_INVALID = [(b"www-authenticate", b'Bearer realm="mcp-gateway", error="invalid_token"')]


def check_exposure(settings: Settings) -> None:
    """Refuse settings that would expose an ungoverned door beyond loopback.

    The admin API is open without a token only in `auth: none` mode (and then only to
    loopback callers); with API keys and no admin token it refuses every request, so it is
    not a door to refuse here."""
    problems = []
    if settings.auth == "none" and not settings.is_loopback():
        problems.append(Problem("settings", None, f"auth: none is only allowed on loopback, not on {settings.host}"))
    if settings.auth == "none" and settings.admin_api and settings.admin_token is None and not settings.is_loopback():
        problems.append(
            Problem(
                "settings",
                None,
                f"the admin API would be open on {settings.host}: "
                "set admin_token (MCP_GATEWAY_ADMIN_TOKEN) or admin_api: false",
            )
        )
    if problems:
        raise ConfigError(problems)


def authenticator(gateway: Gateway) -> Authenticate:
    """Bearer API keys on /mcp (or the local principal when `auth: none`)."""
    if gateway.settings.auth == "none":

        async def local(scope: Scope) -> Principal:
            return LOCAL

        return local
    snapshots = gateway.snapshots

    async def authenticate(scope: Scope) -> Principal | tuple[int, str, list[tuple[bytes, bytes]]]:
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        token = auth.bearer(header)
        if token is None:
            return 401, "Unauthorized: send an API key as `Authorization: Bearer <key>`", _UNAUTHORIZED
        snapshot = snapshots.current
        principal = auth.principal_for(token, snapshot.keys, snapshot.principals)
        if principal is None:
            return 401, "Unauthorized: the API key is not valid", _INVALID
        # Which key it was, so revoking that key ends what it opened (see killswitch.py).
        return replace(principal, key_id=auth.key_id_of(token))

    return authenticate


class GatewayApp:
    """The ASGI app: `/mcp` goes straight to the MCP endpoint (behind the Host check),
    everything else (admin API, health, lifespan) to a Starlette app.

    The MCP endpoint is the hot path; Starlette's routing and middleware stack would add
    a measurable share of a call's cost and give it nothing it needs.
    """

    def __init__(self, starlette: Starlette, hosts: HostCheck) -> None:
        self.starlette = starlette
        self.state = starlette.state
        self.endpoint: McpEndpoint | None = None
        self.startup_error: BaseException | None = None
        """Why the lifespan could not start; `serve` reports it as one line."""
        self._mcp = HostCheckMiddleware(self._serve_mcp, hosts)

    async def _serve_mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.endpoint is not None, "the app's lifespan has not run"
        await self.endpoint(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in ("/mcp", "/mcp/"):
            await self._mcp(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.starlette(scope, receive, self._lifespan_send(send))
        else:
            await self.starlette(scope, receive, send)

    def _lifespan_send(self, send: Send) -> Send:
        """Keep a failed start's traceback out of uvicorn's log: `serve` prints why in one line."""

        async def quiet(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed" and self.startup_error is not None:
                message = {**message, "message": ""}
            await send(message)

        return quiet


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def may_scrape(request: Request) -> bool:
    """`/metrics` is for the `metrics_token`, or an admin token (any role: every role can
    at least view). With neither configured, for this machine only: a loopback listener,
    peer and Host (the Host check is waived for this path, which probes reach by pod IP,
    so a rebound name cannot read it from a browser)."""
    gw: Gateway = request.app.state.gateway
    configured = gw.settings.metrics_token
    if configured is not None:
        token = auth.bearer(request.headers.get("authorization"))
        if token is not None and auth.any_matches(token, [auth.digest(configured.get_secret_value())]):
            return True
    if actor_for(request) is not None:
        return True
    if configured is not None or gw.settings.admin_token is not None or gw.snapshots.current.admin_tokens:
        return False
    host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
    peer = request.client.host if request.client else ""
    return gw.settings.is_loopback() and host in _LOOPBACK and peer in _LOOPBACK


async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process's metrics (each replica is scraped on its own)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    gw: Gateway = request.app.state.gateway
    if gw.metrics is None:
        return JSONResponse({"error": {"code": "not_found", "message": "metrics are off (metrics: false)"}}, 404)
    if not may_scrape(request):
        return JSONResponse(
            {"error": {"code": "unauthorized", "message": "send the metrics token or an admin token as a bearer"}},
            401,
            headers={"WWW-Authenticate": 'Bearer realm="mcp-gateway-metrics"'},
        )
    return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready (200) while the policy snapshot is fresh, else 503. The page is open to anyone
    (probes have no token, and it is exempt from the Host check so they can address the pod
    by IP), so the details (snapshot version and age, each upstream's state, PID and last
    error) go only to a caller the admin API would serve: an admin token, or a loopback
    caller in `auth: none` mode. `/admin/api/status` has them and more."""
    gateway: Gateway = request.app.state.gateway
    snapshots = gateway.snapshots
    fresh = not snapshots.stale()
    body: dict[str, Any] = {"status": "ready" if fresh else "not ready"}
    if actor_for(request) is not None:
        body["snapshot"] = {
            "version": snapshots.current.version,
            "policy_version": snapshots.current.policy.policy_version,
            "age_seconds": round(snapshots.age(), 3),
            "stale": not fresh,
        }
        body["upstreams"] = [u.status() for u in gateway.upstreams.values()]
    return JSONResponse(body, status_code=200 if fresh else 503)


def create_app(config: Config, settings: Settings) -> GatewayApp:
    """Build the gateway's ASGI app."""
    check_exposure(settings)
    hosts = HostCheck(settings.allowed_hosts, settings.allowed_origins, settings.dns_rebinding_protection)

    @asynccontextmanager
    async def lifespan(starlette: Starlette) -> AsyncIterator[None]:
        started = False
        try:
            async with running(config, settings) as gateway:
                starlette.state.gateway = gateway
                tokens = settings.admin_token is not None or gateway.snapshots.current.admin_tokens
                if settings.admin_api and settings.auth != "none" and not tokens:
                    log.warning("admin API: %s", NO_TOKEN)
                options = HttpOptions(settings.max_body_bytes, settings.session_idle_timeout, settings.max_sessions)
                app.endpoint = McpEndpoint(gateway.router, authenticator(gateway), gateway.tg, options)
                started = True
                yield
        except Exception as exc:
            if not started:
                app.startup_error = exc
            raise

    routes: list[Any] = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    if settings.admin_api:
        routes.append(admin_routes())
    starlette = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(HostCheckMiddleware, check=hosts)])
    app = GatewayApp(starlette, hosts)
    return app
