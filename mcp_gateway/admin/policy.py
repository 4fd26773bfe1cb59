"""The live policy: its version and history, and reloading the policy directory."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..roles import Role
from ..runtime import Gateway
from ..store import rules as rule_store
from .common import admin, gateway, ok, operator_of
from .operators import Operator


@admin(Role.viewer)
async def show(request: Request, actor: str) -> Response:
    """The live policy version, recent versions, and the state of the policy directory."""
    gw = gateway(request)
    return ok(
        {
            "policy_version": gw.snapshots.current.policy.policy_version,
            "history": await rule_store.policy_history(gw.engine, limit=20),
            "directory": str(gw.settings.policies) if gw.settings.policies else None,
            "reload": gw.policy_reload_status(),
        }
    )


async def reload_policy(gw: Gateway, operator: Operator) -> dict[str, Any]:
    """Audit, then validate and apply the policy directory (the REST route and the dashboard
    take this path); `ApiError` 409 without a directory. `error` set: the live policy stays."""
    if gw.settings.policies is None:
        raise ApiError(409, "no_policy_directory", "this gateway has no policy directory (settings: policies)")
    directory = str(gw.settings.policies)
    await gw.governance.audit_admin(operator.name, "policy.reload", directory, role=operator.role)
    outcome = await gw.reload_policies(operator.name)
    return {k: outcome[k] for k in ("applied", "policy_version", "error")}


@admin(Role.operator)
async def reload(request: Request, actor: str) -> Response:
    """Validate and apply the policy directory now. An invalid bundle leaves the live one in force."""
    result = await reload_policy(gateway(request), operator_of(request))
    return ok(result, 200 if result["error"] is None else 422)
