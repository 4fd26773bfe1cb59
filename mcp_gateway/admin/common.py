"""What every admin route shares: the caller's identity, JSON bodies, errors, auditing.

Routes raise `ApiError` (errors.py) for every refusal, and `handle_api_error`, the app's
exception handler for it, renders each one: one place decides what an error looks like."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ApiError, AuditUnavailable
from ..roles import Role
from ..runtime import Gateway
from .operators import Operator, authenticate, note_use, tokenless

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
AdminHandler = Callable[[Request, str], Awaitable[Response]]

MAX_PARAM = 512
"""The longest query or path parameter any route takes (names and ids are far shorter)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """The exception handler for `ApiError`: its status, `{"error": {...}}` and headers."""
    assert isinstance(exc, ApiError)  # registered for ApiError alone
    return JSONResponse({"error": exc.to_error()}, status_code=exc.status, headers=exc.headers)


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


NO_TOKEN = (
    "this gateway has no admin token, so its admin API refuses every request: set admin_token "
    "(MCP_GATEWAY_ADMIN_TOKEN) or create one with `mcp-gateway admin-token create`"
)


_REQUIRED = {
    False: "an admin token is required",
    True: "an admin token, or the identity provider's access token with an operator role, is required",
}

Endpoint = Callable[[Request], Awaitable[Response]]


def admin(role: Role) -> Callable[[AdminHandler], Endpoint]:
    """Make `handler` an admin route open to `role` and the roles above it: authenticate the
    caller (401 without a valid credential, 403 `forbidden` with too small a role), then run
    the handler with the actor's name. Every admin route names its role here, and only here;
    the endpoint carries it as `required_role` for the OpenAPI document and the tests.
    Refusals are raised as `ApiError`, as are the handler's failures to reach the audit or
    the store (503); `handle_api_error` renders them."""
    if not isinstance(role, Role):
        raise TypeError("an admin route names the least role it needs: @admin(Role.viewer)")

    def decorate(handler: AdminHandler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            operator = await authenticate(request)
            if operator is None:
                gw = gateway(request)
                unconfigured = tokenless(gw)
                raise ApiError(
                    401,
                    "unauthorized",
                    NO_TOKEN if unconfigured and gw.settings.auth != "none" else _REQUIRED[gw.oauth is not None],
                    headers={"WWW-Authenticate": 'Bearer realm="mcp-gateway-admin"'},
                )
            note_use(request, operator)
            if not operator.role.allows(role):
                # The handler's name, not the path: a path holds whatever the caller sent.
                detail = f"{handler.__name__} needs {role}"
                await gateway(request).governance.audit_admin_refusal(operator.name, operator.role, detail)
                raise forbidden(role, operator)
            request.state.operator = operator
            try:
                _check_parameters(request)
                return await handler(request, operator.name)
            except AuditUnavailable:
                raise ApiError(
                    503, "audit_unavailable", "the action was not taken: its audit record could not be written"
                ) from None
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                # Every store operation is bounded (`store_timeout`) and its connection abandoned
                # past the bound, so an unconfirmed change is not applied later. The one window
                # left: a COMMIT that had reached the store just before took effect then.
                log.warning("admin %s %s: the store did not answer: %s", request.method, request.url.path, exc)
                raise ApiError(
                    503,
                    "store_unavailable",
                    "the store did not answer in time: a change was not applied (unless its commit had reached "
                    "the store just before; check before retrying)",
                ) from None

        wrapped = functools.wraps(handler)(endpoint)
        wrapped.required_role = role  # type: ignore[attr-defined]
        return wrapped

    return decorate


def required_role(endpoint: object) -> Role | None:
    """The role an admin route was declared with, None for a route that is not one."""
    role = getattr(endpoint, "required_role", None)
    return role if isinstance(role, Role) else None


def forbidden(needed: Role, operator: Operator) -> ApiError:
    """403 `forbidden`, naming the role needed and the role held."""
    return ApiError(
        403,
        "forbidden",
        f"this needs the {needed} role; {operator.name!r} has the {operator.role} role",
        fields={"required_role": needed.value, "role": operator.role.value},
    )


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


def operator_of(request: Request) -> Operator:
    """The operator an admin route's decorator authenticated."""
    operator: Operator = request.state.operator
    return operator


async def audited(request: Request, actor: str, action: str, detail: str) -> None:
    """Record an admin action before taking it: no audit, no action. The row names the
    actor and the role it acted with."""
    operator: Operator | None = getattr(request.state, "operator", None)
    role = operator.role if operator is not None else None
    await gateway(request).governance.audit_admin(actor, action, detail, role=role)


async def refreshed(request: Request) -> None:
    """Make a change the store now holds take effect in this process at once."""
    await gateway(request).snapshots.refresh(force=True)


def ok(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)
