"""Admin tokens: list, create (with a role), revoke."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from .. import auth
from ..errors import ApiError
from ..roles import Role
from ..store import identity as store
from .common import admin, audited, body, gateway, ok, refreshed
from .models import NewAdminToken
from .operators import CONFIGURED, LOCAL_OPERATOR


class NameTaken(ValueError):
    """The audit names an actor by its token's name, so a name stands for one credential."""


async def make_admin_token(engine: AsyncEngine, name: str, role: Role) -> dict[str, object]:
    """Create an admin token; the secret (`token`) appears only in what this returns.
    `NameTaken` if a stored token (revoked ones too: their rows stay in the audit) or a
    built-in actor (`admin-token`, `local-admin`) has the name."""
    if name in (CONFIGURED, LOCAL_OPERATOR) or any(
        row["name"] == name for row in await store.list_admin_tokens(engine)
    ):
        raise NameTaken(
            f"the name {name!r} is taken (by an admin token, revoked or not, or a built-in actor): "
            "the audit names actors by it, so give this token a name of its own"
        )
    token_id, secret, hashed = auth.new_key(auth.ADMIN_PREFIX)
    row = await store.add_admin_token(engine, token_id, name, hashed, role)
    return {**row, "token": secret}


@admin(Role.admin)
async def list_admin_tokens(request: Request, actor: str) -> Response:
    """Admin tokens made in the store, revoked ones too (never their secrets). The
    `admin_token` setting is not listed: it lives in the configuration."""
    return ok({"items": await store.list_admin_tokens(gateway(request).engine)})


@admin(Role.admin)
async def create_admin_token(request: Request, actor: str) -> Response:
    """Create an admin token with a role. The response holds the token; it is not stored and cannot be shown again."""
    spec = await body(request, NewAdminToken)
    await audited(request, actor, "admin_token.create", f"{spec.name} ({spec.role})")
    try:
        created = await make_admin_token(gateway(request).engine, spec.name, spec.role)
    except NameTaken as exc:
        raise ApiError(409, "exists", str(exc)) from None
    await refreshed(request)
    return ok(created, 201)


@admin(Role.admin)
async def revoke_admin_token(request: Request, actor: str) -> Response:
    """Revoke an admin token: every replica refuses it (401) as soon as it refuses a revoked key."""
    token_id = request.path_params["id"]
    await audited(request, actor, "admin_token.revoke", token_id)
    try:
        await store.revoke_admin_token(gateway(request).engine, token_id)
    except store.NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    await refreshed(request)
    return ok({"id": token_id, "revoked": True})
