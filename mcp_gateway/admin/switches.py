"""Kill switches: list, engage, release (the REST routes and the dashboard take the same path)."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..roles import Role
from ..runtime import Gateway
from ..store import switches as store
from ..store.identity import NotFound
from .common import ApiError, admin, body, gateway, ok, operator_of
from .models import EngageSwitch, ReleaseSwitch
from .operators import Operator


@admin(Role.viewer)
async def list_switches(request: Request, actor: str) -> Response:
    """Engaged kill switches (`?all=true` for released and expired ones too)."""
    include = request.query_params.get("all", "").lower() in ("1", "true", "yes")
    return ok({"items": await store.listing(gateway(request).engine, include_released=include)})


async def engage_switch(gw: Gateway, operator: Operator, spec: EngageSwitch) -> dict[str, Any]:
    """Audit, then engage, then apply at once in this process (other replicas by notification)."""
    target = spec.target()
    detail = f"{spec.scope} {target!r}: {spec.reason}"
    actor = operator.name
    await gw.governance.audit_admin(actor, "killswitch.engage", detail, role=operator.role)
    expires = time.time() + spec.expires_in_seconds if spec.expires_in_seconds else None
    row = await store.engage(gw.engine, spec.scope, target, actor, spec.reason, expires)
    await gw.snapshots.refresh(force=True)
    return row


async def release_switch(gw: Gateway, operator: Operator, switch_id: str, reason: str) -> dict[str, Any]:
    """Audit, then release; `ApiError` 404 if there is no such switch."""
    actor = operator.name
    await gw.governance.audit_admin(actor, "killswitch.release", f"{switch_id}: {reason}", role=operator.role)
    try:
        row = await store.release(gw.engine, switch_id, actor, reason)
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    await gw.snapshots.refresh(force=True)
    return row


@admin(Role.operator)
async def engage(request: Request, actor: str) -> Response:
    """Engage a kill switch: matching calls in flight end at once, new ones are denied."""
    spec = await body(request, EngageSwitch)
    return ok(await engage_switch(gateway(request), operator_of(request), spec), 201)


@admin(Role.operator)
async def release(request: Request, actor: str) -> Response:
    """Release an engaged kill switch."""
    spec = await body(request, ReleaseSwitch)
    switch_id = request.path_params["id"]
    return ok(await release_switch(gateway(request), operator_of(request), switch_id, spec.reason))
