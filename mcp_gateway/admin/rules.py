"""Rules through the API, for gateways whose policy is not kept in files."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..policy_model import Rule
from ..roles import Role
from ..store import identity as identity_store
from ..store import rules as store
from .common import admin, audited, body, gateway, ok, refreshed
from .models import NewRule


def _managed_by_files(request: Request) -> None:
    directory = gateway(request).settings.policies
    if directory is not None:
        raise ApiError(409, "managed_by_files", f"rules are managed by the policy files in {directory}")


def _listed(patterns: tuple[str, ...] | None) -> list[str] | None:
    return list(patterns) if patterns is not None else None


def _json(rule: Rule) -> dict[str, object]:
    return {
        "id": rule.id,
        "team": rule.team,
        "effect": rule.effect,
        "servers": list(rule.servers),
        # null: the rule does not name that kind (one that names none covers every kind).
        "tools": _listed(rule.tools),
        "prompts": _listed(rule.prompts),
        "resources": _listed(rule.resources),
        "arguments": rule.arguments,
        "shadow": rule.shadow,
        "position": rule.position,
        "description": rule.description,
    }


def _tuple(patterns: list[str] | None) -> tuple[str, ...] | None:
    return tuple(patterns) if patterns is not None else None


@admin(Role.viewer)
async def list_rules(request: Request, actor: str) -> Response:
    """Rules, in the order they are evaluated within each team."""
    rules = await store.list_rules(gateway(request).engine, request.query_params.get("team"))
    return ok(
        {"items": [_json(r) for r in rules], "policy_version": gateway(request).snapshots.current.policy.policy_version}
    )


@admin(Role.admin)
async def create_rule(request: Request, actor: str) -> Response:
    """Append a rule to its team's list (a new policy version)."""
    _managed_by_files(request)
    spec = await body(request, NewRule)
    rule = Rule(
        id=spec.id,
        team=spec.team,
        effect=spec.effect,
        servers=tuple(spec.servers),
        tools=_tuple(spec.tools),
        prompts=_tuple(spec.prompts),
        resources=_tuple(spec.resources),
        arguments={k: v.model_dump(exclude_none=True) for k, v in spec.arguments.items()} if spec.arguments else None,
        shadow=spec.shadow,
        description=spec.description,
    )
    await audited(request, actor, "rule.create", spec.model_dump_json())
    engine = gateway(request).engine
    await identity_store.ensure_team(engine, spec.team)
    try:
        placed, version = await store.add_rule(engine, rule, actor)
    except ValueError as exc:
        raise ApiError(409, "exists", str(exc)) from None
    await refreshed(request)
    return ok({**_json(placed), "policy_version": version}, 201)


@admin(Role.admin)
async def delete_rule(request: Request, actor: str) -> Response:
    """Delete a rule (a new policy version)."""
    _managed_by_files(request)
    rule_id = request.path_params["id"]
    await audited(request, actor, "rule.delete", rule_id)
    try:
        version = await store.delete_rule(gateway(request).engine, rule_id, actor)
    except identity_store.NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    await refreshed(request)
    return ok({"id": rule_id, "deleted": True, "policy_version": version})
