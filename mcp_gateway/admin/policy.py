"""The live policy: its version and history, and reloading the policy directory."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..roles import Role
from ..store import rules as rule_store
from .common import ApiError, admin, audited, gateway, ok


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


@admin(Role.operator)
async def reload(request: Request, actor: str) -> Response:
    """Validate and apply the policy directory now. An invalid bundle leaves the live one in force."""
    gw = gateway(request)
    if gw.settings.policies is None:
        raise ApiError(409, "no_policy_directory", "this gateway has no policy directory (settings: policies)")
    await audited(request, actor, "policy.reload", str(gw.settings.policies))
    outcome = await gw.reload_policies(actor)
    result = {k: outcome[k] for k in ("applied", "policy_version", "error")}
    return ok(result, 200 if result["error"] is None else 422)
