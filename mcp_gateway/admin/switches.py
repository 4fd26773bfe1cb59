"""Kill switches: list, engage, release (the REST routes and the dashboard take the same path)."""

from __future__ import annotations

import difflib
import time
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..proxy.catalog import SEPARATOR
from ..roles import Role
from ..runtime import Gateway
from ..store import switches as store
from ..store.identity import NotFound
from .common import admin, body, gateway, ok, operator_of
from .models import EngageSwitch, ReleaseSwitch
from .operators import Operator


@admin(Role.viewer)
async def list_switches(request: Request, actor: str) -> Response:
    """Engaged kill switches (`?all=true` for released and expired ones too)."""
    include = request.query_params.get("all", "").lower() in ("1", "true", "yes")
    return ok({"items": await store.listing(gateway(request).engine, include_released=include)})


async def engage_switch(gw: Gateway, operator: Operator, spec: EngageSwitch) -> dict[str, Any]:
    """Check the target exists (`ApiError` 422 if not, unless `unconfigured`), audit, engage,
    then apply at once in this process (other replicas by notification)."""
    target = spec.target()
    warning = None if spec.unconfigured else _unknown_target(gw, spec)
    detail = f"{spec.scope} {target!r}: {spec.reason}"
    actor = operator.name
    await gw.governance.audit_admin(actor, "killswitch.engage", detail, role=operator.role)
    expires = time.time() + spec.expires_in_seconds if spec.expires_in_seconds else None
    row = await store.engage(gw.engine, spec.scope, target, actor, spec.reason, expires)
    await gw.snapshots.refresh(force=True)
    return {**row, "warning": warning} if warning else row


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


def _unknown_target(gw: Gateway, spec: EngageSwitch) -> str | None:
    """Refuse (422) a server or tool switch that names nothing this gateway has: a typo
    would otherwise stop nothing while the operator believes it stops something. Returns
    a warning when the name cannot be checked (the server's tools are not known while it
    is not connected)."""
    if spec.scope not in ("server", "tool") or spec.server is None:
        return None
    if spec.server not in gw.upstreams:
        configured = ", ".join(sorted(gw.upstreams)) or "none"
        raise ApiError(
            422,
            "unknown_target",
            f"no upstream named {spec.server!r} is configured{_near(spec.server, gw.upstreams)} "
            f'(configured: {configured}); send "unconfigured": true to engage it for a server not yet added',
        )
    if spec.scope != "tool" or spec.tool is None:
        return None
    upstream = gw.upstreams[spec.server]
    if upstream.state != "ready":
        state = upstream.state
        return f"upstream {spec.server!r} is {state}: its tools are not known, so {spec.tool!r} was not checked"
    tools = sorted({str(t["name"]) for t in upstream.catalog.tools})
    if spec.tool in tools:
        return None
    prefix = f"{upstream.namespace}{SEPARATOR}"
    bare = spec.tool.removeprefix(prefix)
    if upstream.namespace and bare != spec.tool and bare in tools:
        hint = f" (name it as its upstream does: {bare!r})"
    else:
        hint = _near(spec.tool, tools)
    raise ApiError(
        422,
        "unknown_target",
        f"upstream {spec.server!r} has no tool named {spec.tool!r}{hint} (its tools: {', '.join(tools) or 'none'}); "
        'send "unconfigured": true to engage it for a tool not yet offered',
    )


def _near(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@admin(Role.operator)
async def release(request: Request, actor: str) -> Response:
    """Release an engaged kill switch."""
    spec = await body(request, ReleaseSwitch)
    switch_id = request.path_params["id"]
    return ok(await release_switch(gateway(request), operator_of(request), switch_id, spec.reason))
