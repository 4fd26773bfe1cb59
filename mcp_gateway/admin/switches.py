"""Kill switches: list, engage, release."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from ..roles import Role
from ..store import switches as store
from ..store.identity import NotFound
from .common import ApiError, admin, audited, body, gateway, ok, refreshed
from .models import EngageSwitch, ReleaseSwitch


@admin(Role.viewer)
async def list_switches(request: Request, actor: str) -> Response:
    """Engaged kill switches (`?all=true` for released and expired ones too)."""
    include = request.query_params.get("all", "").lower() in ("1", "true", "yes")
    return ok({"items": await store.listing(gateway(request).engine, include_released=include)})


@admin(Role.operator)
async def engage(request: Request, actor: str) -> Response:
    """Engage a kill switch: matching calls in flight end at once, new ones are denied."""
    spec = await body(request, EngageSwitch)
    target = spec.target()
    await audited(request, actor, "killswitch.engage", f"{spec.scope} {target!r}: {spec.reason}")
    expires = time.time() + spec.expires_in_seconds if spec.expires_in_seconds else None
    row = await store.engage(gateway(request).engine, spec.scope, target, actor, spec.reason, expires)
    await refreshed(request)
    return ok(row, 201)


@admin(Role.operator)
async def release(request: Request, actor: str) -> Response:
    """Release an engaged kill switch."""
    spec = await body(request, ReleaseSwitch)
    switch_id = request.path_params["id"]
    await audited(request, actor, "killswitch.release", f"{switch_id}: {spec.reason}")
    try:
        row = await store.release(gateway(request).engine, switch_id, actor, spec.reason)
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    await refreshed(request)
    return ok(row)
