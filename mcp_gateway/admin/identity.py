"""Teams, principals and API keys."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import auth
from ..errors import ApiError
from ..roles import Role
from ..store import identity as store
from .common import admin, audited, body, gateway, ok, refreshed
from .models import NewKey, NewPrincipal, NewTeam


@admin(Role.viewer)
async def list_teams(request: Request, actor: str) -> Response:
    """All teams."""
    return ok({"items": await store.list_teams(gateway(request).engine)})


@admin(Role.admin)
async def create_team(request: Request, actor: str) -> Response:
    """Create a team."""
    spec = await body(request, NewTeam)
    await audited(request, actor, "team.create", spec.id)
    if not await store.ensure_team(gateway(request).engine, spec.id, spec.description):
        raise ApiError(409, "exists", f"team {spec.id!r} already exists")
    await refreshed(request)
    return ok({"id": spec.id, "description": spec.description}, 201)


@admin(Role.viewer)
async def list_principals(request: Request, actor: str) -> Response:
    """Principals, optionally of one `team`."""
    return ok({"items": await store.list_principals(gateway(request).engine, request.query_params.get("team"))})


@admin(Role.admin)
async def create_principal(request: Request, actor: str) -> Response:
    """Create a principal (and its team if needed)."""
    spec = await body(request, NewPrincipal)
    await audited(request, actor, "principal.create", f"{spec.team}/{spec.name}")
    row = await store.ensure_principal(gateway(request).engine, spec.team, spec.name, spec.kind)
    await refreshed(request)
    return ok(row, 201)


@admin(Role.viewer)
async def list_keys(request: Request, actor: str) -> Response:
    """API keys (never their secrets), optionally of one `principal`."""
    return ok({"items": await store.list_keys(gateway(request).engine, request.query_params.get("principal"))})


async def make_key(engine: object, team: str, name: str, kind: str) -> dict[str, str]:
    """Create a key for team/name (creating both if needed); the secret appears only here."""
    principal = await store.ensure_principal(engine, team, name, kind)  # type: ignore[arg-type]
    key_id, secret, hashed = auth.new_key()
    await store.add_key(engine, key_id, hashed, principal["id"])  # type: ignore[arg-type]
    return {"id": key_id, "principal": principal["id"], "team": team, "key": secret}


@admin(Role.admin)
async def create_key(request: Request, actor: str) -> Response:
    """Create an API key. The response holds the key; it is not stored and cannot be shown again."""
    spec = await body(request, NewKey)
    await audited(request, actor, "key.create", f"{spec.team}/{spec.name}")
    created = await make_key(gateway(request).engine, spec.team, spec.name, spec.kind)
    await refreshed(request)
    return ok(created, 201)


@admin(Role.admin)
async def revoke_key(request: Request, actor: str) -> Response:
    """Revoke an API key: requests with it are refused at once."""
    key_id = request.path_params["id"]
    await audited(request, actor, "key.revoke", key_id)
    try:
        await store.revoke_key(gateway(request).engine, key_id)
    except store.NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    await refreshed(request)
    return ok({"id": key_id, "revoked": True})
