"""What every admin route shares: the caller's identity, JSON bodies, errors, auditing."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import auth
from ..audit.writer import AuditUnavailable
from ..oauth import claims
from ..oauth.verified import TokenRejected
from ..roles import Role
from ..runtime import Gateway

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request, str], Awaitable[Response]]

MAX_PARAM = 512
"""The longest query or path parameter any route takes (names and ids are far shorter)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


NO_TOKEN = (
    "this gateway has no admin token, so its admin API refuses every request: set admin_token "
    "(MCP_GATEWAY_ADMIN_TOKEN) or create one with `mcp-gateway admin-token create`"
)


@dataclass(frozen=True, slots=True)
class Operator:
    """Who acts through the admin API or the dashboard, and what they may do."""

    name: str
    role: Role


LOCAL_ADMIN = Operator("local-admin", Role.admin)


def tokenless(gw: Gateway) -> bool:
    """No admin token is configured or stored."""
    return gw.settings.admin_token is None and not gw.snapshots.current.admin_tokens


def local_caller(request: Request) -> bool:
    """A loopback listener, peer and Host: the one caller an `auth: none` gateway without
    admin tokens lets in. With API keys there is no open door at all: a reverse proxy on
    the same host has a loopback peer and may well pass `Host: localhost`, and must not
    hand this machine's privilege to its own clients."""
    gw = gateway(request)
    if gw.settings.auth != "none" or not tokenless(gw):
        return False
    host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
    peer = request.client.host if request.client else ""
    local = host in ("127.0.0.1", "localhost", "::1") and peer in ("127.0.0.1", "::1", "localhost")
    return gw.settings.is_loopback() and local


def operator_for_token(gw: Gateway, token: str) -> Operator | None:
    """The operator an admin token stands for, if it is valid now (checked on every request,
    so a revoked token stops working at once)."""
    configured = gw.settings.admin_token
    if configured is not None and auth.any_matches(token, [auth.digest(configured.get_secret_value())]):
        return Operator("admin-token", Role.admin)
    token_id = auth.key_id_of(token, auth.ADMIN_PREFIX)
    entry = gw.snapshots.current.admin_tokens.get(token_id) if token_id is not None else None
    if entry is not None and auth.matches(token, entry[0]):
        return Operator(entry[1], Role.admin)
    return None


def operator_for(request: Request) -> Operator | None:
    """The caller of an admin route: by its bearer token, or the local admin of an
    `auth: none` loopback gateway; None if neither."""
    if local_caller(request):
        return LOCAL_ADMIN
    token = auth.bearer(request.headers.get("authorization"))
    return operator_for_token(gateway(request), token) if token is not None else None


_REQUIRED = {
    False: "an admin token is required",
    True: "an admin token, or the identity provider's access token with an operator role, is required",
}


def actor_for(request: Request) -> str | None:
    """The admin token's name, `local-admin` on an `auth: none` loopback gateway, or None."""
    operator = operator_for(request)
    return operator.name if operator is not None else None


async def oidc_operator(request: Request) -> tuple[str, Role] | None:
    """An operator who came with the identity provider's access token (`oauth:` configured):
    `oidc:<name>` and the highest role its `role_claim` maps to; None for any other bearer,
    an invalid token, or a token with no role."""
    gw = gateway(request)
    token = auth.bearer(request.headers.get("authorization"))
    if gw.oauth is None or token is None or token.startswith((auth.ADMIN_PREFIX, auth.KEY_PREFIX)):
        return None
    settings = gw.oauth.settings
    try:
        audience = [settings.admin_audience] if settings.admin_audience else None  # None: the /mcp audiences
        verified = await gw.oauth.verifier.verify(token, audience)
    except TokenRejected:
        return None
    role = claims.role_of(verified, settings)
    return (claims.actor_of(verified, settings), role) if role is not None else None


def needed_role(request: Request) -> Role:
    """The least role a request needs: reading is `viewer`, acting on traffic (kill switches,
    policy reloads) `operator`, changing who may do what `admin`."""
    if request.method == "GET":
        return Role.viewer
    path = request.url.path.removeprefix("/admin/api")
    if path.startswith("/kill-switches") or path == "/policy/reload":
        return Role.operator
    return Role.admin


def admin(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate the admin token (or an operator's access token, with the role the
    request needs), then run the handler with the actor's name."""

    async def endpoint(request: Request) -> Response:
        actor = actor_for(request)
        if actor is None and (operator := await oidc_operator(request)) is not None:
            actor, role = operator
            needed = needed_role(request)
            if not role.allows(needed):
                return error(403, "forbidden", f"{actor} has the role {role.value}; this needs {needed.value}")
        if actor is None:
            gw = gateway(request)
            unconfigured = tokenless(gw) and gw.oauth is None
            return error(
                401,
                "unauthorized",
                NO_TOKEN if unconfigured and gw.settings.auth != "none" else _REQUIRED[gw.oauth is not None],
                {"WWW-Authenticate": 'Bearer realm="mcp-gateway-admin"'},
            )
        try:
            _check_parameters(request)
            return await handler(request, actor)
        except ApiError as exc:
            return error(exc.status, exc.code, exc.message)
        except AuditUnavailable:
            return error(503, "audit_unavailable", "the action was not taken: its audit record could not be written")
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # Every store operation is bounded (`store_timeout`) and its connection abandoned
            # past the bound, so an unconfirmed change is not applied later. The one window
            # left: a COMMIT that had reached the store just before took effect then.
            log.warning("admin %s %s: the store did not answer: %s", request.method, request.url.path, exc)
            return error(
                503,
                "store_unavailable",
                "the store did not answer in time: a change was not applied (unless its commit had reached "
                "the store just before; check before retrying)",
            )

    return functools.wraps(handler)(endpoint)


def _check_parameters(request: Request) -> None:
    """No route takes a long parameter or one with control characters (a NUL is not even
    storable in PostgreSQL text): refuse them here, naming the parameter, for every route."""
    named = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in named:
        if not isinstance(value, str):
            continue
        if len(value) > MAX_PARAM:
            raise ApiError(400, "invalid_request", f"{name} is longer than {MAX_PARAM} characters")
        if _CONTROL.search(value):
            raise ApiError(400, "invalid_request", f"{name} must not contain control characters")


async def body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    if b"\\u0000" in raw or b"\x00" in raw:
        raise ApiError(400, "invalid_request", "body: strings must not contain NUL characters")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, "invalid_request", f"{where}: {first['msg']}") from None


async def audited(request: Request, actor: str, action: str, detail: str) -> None:
    """Record an admin action before taking it: no audit, no action."""
    await gateway(request).governance.audit_admin(actor, action, detail)


async def refreshed(request: Request) -> None:
    """Make a change the store now holds take effect in this process at once."""
    await gateway(request).snapshots.refresh(force=True)


def ok(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)
