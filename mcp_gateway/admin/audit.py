"""The audit log, queried: filters, newest first, cursor pagination."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..store import audit as store
from .common import ApiError, admin, gateway, ok

FILTERS = ("team", "principal", "server", "tool", "decision", "kind")


def _number(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name} must be a number (epoch seconds)") from None


@admin
async def query(request: Request, actor: str) -> Response:
    """Audit rows, newest first. Pass `cursor` from the previous page to get the next."""
    params = request.query_params
    filters = store.Filters(since=_number(request, "since"), until=_number(request, "until"))
    for name in FILTERS:
        setattr(filters, name, params.get(name))
    limit = int(_number(request, "limit") or 100)
    if not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_request", "limit must be between 1 and 1000")
    cursor = params.get("cursor")
    before = int(cursor) if cursor and cursor.isdigit() else None
    rows = await store.query(gateway(request).engine, filters, before=before, limit=limit)
    next_cursor = str(rows[-1]["seq"]) if len(rows) == limit else None
    return ok({"items": rows, "next_cursor": next_cursor})
