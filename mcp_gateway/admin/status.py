"""Status: upstreams and their health, the snapshot's version and age, the audit writer."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from ..roles import Role
from ..store import rules as rule_store
from .common import admin, gateway, ok


@admin(Role.viewer)
async def status(request: Request, actor: str) -> Response:
    """The gateway's health as an operator needs it."""
    gw = gateway(request)
    snapshot = gw.snapshots.current
    writer = gw.governance.writer
    history = await rule_store.policy_history(gw.engine, limit=1)
    return ok(
        {
            "uptime_seconds": round(time.time() - gw.started_at, 3),
            "upstreams": [u.status() for u in gw.upstreams.values()],
            "conflicts": gw.router.catalog.snapshot.conflicts,
            "snapshot": {
                "version": snapshot.version,
                "policy_version": snapshot.policy.policy_version,
                "age_seconds": round(gw.snapshots.age(), 3),
                "stale": gw.snapshots.stale(),
                "max_age_seconds": gw.snapshots.max_age,
                "last_error": gw.snapshots.last_error,
                "kill_switches": len(snapshot.policy.switches),
            },
            "policy": history[0] if history else None,
            "policy_reload": gw.policy_reload_status(),
            "audit": {
                "chain": writer.chain,
                "writable": writer.healthy,
                "written": writer.written,
                "failures": writer.failures,
                "last_error": writer.last_error,
            },
            "in_flight": len(gw.governance.inflight),
            "sessions": len(gw.router.sessions),
        }
    )
