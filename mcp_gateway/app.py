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
from .admin import EXCEPTION_HANDLERS, admin_routes, operators
from .admin.common import NO_TOKEN
from .config import Config
from .dashboard import dashboard_routes
from .errors import ConfigError, Problem
from .identity import LOCAL, Principal
from .middleware.hosts import HostCheckMiddleware
from .oauth import metadata as oauth_metadata
from .oauth.resource import ResourceServer
from .roles import Role
from .runtime import Gateway, running
from .settings import Settings
from .transport.http import Authenticate, HttpOptions, McpEndpoint
from .transport.replay import ReplayLimits
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


def authenticator(gateway: Gateway, oauth: ResourceServer | None = None) -> Authenticate:
    """Bearer API keys and/or access tokens on /mcp (or the local principal when `auth: none`)."""
    mode = gateway.settings.auth
    if mode == "none":

        async def local(scope: Scope) -> Principal:
            return LOCAL

        return local
    snapshots = gateway.snapshots
    keys = mode in ("keys", "keys+oauth")
    hint = "send an API key as `Authorization: Bearer <key>`" if mode == "keys" else "send a bearer token"

    async def authenticate(scope: Scope) -> Principal | tuple[int, str, list[tuple[bytes, bytes]]]:
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        token = auth.bearer(header)
        if oauth is not None and (token is None or not (keys and token.startswith(auth.KEY_PREFIX))):
            if token is None:
                return oauth.missing(hint)
            client = scope.get("client")
            peer = client[0] if client else None
            return await oauth.principal(token, gateway.governance.audit_refused_identity, peer=peer)
        if token is None:
            return 401, f"Unauthorized: {hint}", _UNAUTHORIZED
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


async def may_scrape(request: Request) -> bool:
    """`/metrics` is for the `metrics_token`, or an operator with at least the `viewer`
    role (the admin API's own authentication). With neither configured, for this machine
    only: a loopback listener, peer and Host (the Host check is waived for this path, which
    probes reach by pod IP, so a rebound name cannot read it from a browser)."""
    gw: Gateway = request.app.state.gateway
    configured = gw.settings.metrics_token
    if configured is not None:
        token = auth.bearer(request.headers.get("authorization"))
        if token is not None and auth.any_matches(token, [auth.digest(configured.get_secret_value())]):
            return True
    operator = await operators.authenticate(request)
    if operator is not None:
        return operator.role.allows(Role.viewer)
    if configured is not None or not operators.tokenless(gw):
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
    if not await may_scrape(request):
        return JSONResponse(
            {"error": {"code": "unauthorized", "message": "send the metrics token or an admin token as a bearer"}},
            401,
            headers={"WWW-Authenticate": 'Bearer realm="mcp-gateway-metrics"'},
        )
    return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)


metrics.required_role = Role.viewer  # type: ignore[attr-defined]
"""Declared like an admin route (`admin.common.required_role` reads it): viewer or better,
or else the scrape-only `metrics_token`."""


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready (200) while the gateway can serve calls: its policy snapshot is fresh, its
    audit log takes rows (a call that cannot be audited is denied, so a gateway that cannot
    write its audit would refuse everything), and each enabled upstream's first connection
    attempt has ended, up or failed (before, its tools are missing from every listing;
    after, an upstream that is down does not make the gateway unready). Else 503, so an
    orchestrator routes elsewhere.

    The page is open to anyone (probes have no token, and it is exempt from the Host check
    so they can address the pod by IP), so the details (why it is not ready, snapshot
    version and age, the audit's health, each upstream's state, PID and last error) go only
    to a caller the admin API would serve: an admin token, an operator's access token, or
    a loopback caller in `auth: none` mode. `/admin/api/status` has them and more."""
    gateway: Gateway = request.app.state.gateway
    snapshots = gateway.snapshots
    writer = gateway.governance.writer
    fresh = not snapshots.stale()
    reasons = []
    if not fresh:
        reasons.append(f"the policy snapshot is stale: {snapshots.last_error or 'not refreshed in time'}")
    if not writer.healthy:
        reasons.append(f"the audit log cannot be written: {writer.last_error}")
    connecting = [u.name for u in gateway.upstreams.values() if not u.settled]
    if connecting:
        reasons.append(f"connecting to upstream(s) for the first time: {', '.join(connecting)}")
    body: dict[str, Any] = {"status": "not ready" if reasons else "ready"}
    if await operators.authenticate(request) is not None:
        body["reasons"] = reasons
        body["snapshot"] = {
            "version": snapshots.current.version,
            "policy_version": snapshots.current.policy.policy_version,
            "age_seconds": round(snapshots.age(), 3),
            "stale": not fresh,
        }
        body["audit"] = {"writable": writer.healthy, "last_error": writer.last_error, "failures": writer.failures}
        body["upstreams"] = [u.status() for u in gateway.upstreams.values()]
    return JSONResponse(body, status_code=503 if reasons else 200)


def create_app(config: Config, settings: Settings) -> GatewayApp:
    """Build the gateway's ASGI app."""
    check_exposure(settings)
    uses_oauth = settings.oauth if "oauth" in settings.auth else None
    hosts = HostCheck(settings.allowed_hosts, settings.allowed_origins, settings.dns_rebinding_protection)

    @asynccontextmanager
    async def lifespan(starlette: Starlette) -> AsyncIterator[None]:
        started = False
        try:
            async with running(config, settings) as gateway:
                starlette.state.gateway = gateway
                tokens = settings.admin_token is not None or gateway.snapshots.current.admin_tokens
                if settings.admin_api and settings.auth != "none" and not tokens and settings.oauth is None:
                    log.warning("admin API: %s", NO_TOKEN)
                replay = ReplayLimits(
                    settings.sse_replay_events,
                    settings.sse_replay_bytes,
                    settings.sse_replay_seconds,
                    settings.sse_retry_ms,
                    settings.sse_poll_after,
                    settings.sse_detached_calls,
                )
                options = HttpOptions(
                    settings.max_body_bytes,
                    settings.session_idle_timeout,
                    settings.max_sessions,
                    settings.session_handshake_timeout,
                    replay,
                )
                app.endpoint = McpEndpoint(
                    gateway.router,
                    authenticator(gateway, gateway.oauth if uses_oauth is not None else None),
                    gateway.tg,
                    options,
                )
                started = True
                yield
        except Exception as exc:
            if not started:
                app.startup_error = exc
            raise

    routes: list[Any] = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    if uses_oauth is not None:
        prm = oauth_metadata.document(uses_oauth)

        async def protected_resource(request: Request) -> JSONResponse:
            return JSONResponse(prm, headers={"cache-control": "max-age=3600"})

        paths = {oauth_metadata.WELL_KNOWN, oauth_metadata.metadata_path(uses_oauth)}
        routes += [Route(path, protected_resource) for path in sorted(paths)]
    if settings.identity_signing_key is not None:

        async def identity_keys(request: Request) -> JSONResponse:
            signer = request.app.state.gateway.router.identity
            return JSONResponse(signer.jwks(), headers={"cache-control": "max-age=300"})

        routes.append(Route("/.well-known/jwks.json", identity_keys))
    if settings.admin_api:
        routes.append(admin_routes())
        routes.extend(dashboard_routes())
    starlette = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(HostCheckMiddleware, check=hosts)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app = GatewayApp(starlette, hosts)
    return app
