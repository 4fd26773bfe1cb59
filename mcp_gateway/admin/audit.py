"""The audit log, queried: filters, newest first, cursor pagination."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..store import audit as store
from ..when import FORMS, parse_time
from .common import ApiError, admin, gateway, ok

FILTERS = ("team", "principal", "server", "tool", "decision", "kind")


def _number(request: Request, name: str, what: str = "a number (epoch seconds)") -> float | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name} must be {what}") from None


def _time(request: Request, name: str) -> float | None:
    """`since`/`until`: epoch seconds or ISO 8601, the forms the CLI's flags take."""
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name} must be {FORMS}") from None


@admin
async def query(request: Request, actor: str) -> Response:
    """Audit rows, newest first. Pass `cursor` from the previous page to get the next."""
    params = request.query_params
    filters = store.Filters(since=_time(request, "since"), until=_time(request, "until"))
    for name in FILTERS:
        setattr(filters, name, params.get(name))
    limit_value = _number(request, "limit", "a whole number")
    limit = 100 if limit_value is None else int(limit_value)
    if (limit_value is not None and limit != limit_value) or not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_request", "limit must be a whole number between 1 and 1000")
    cursor = params.get("cursor")
    if cursor is not None and not cursor.isdigit():
        raise ApiError(400, "invalid_request", "cursor must be the next_cursor of a previous page")
    before = int(cursor) if cursor else None
    rows = await store.query(gateway(request).engine, filters, before=before, limit=limit)
    next_cursor = str(rows[-1]["seq"]) if len(rows) == limit else None
    return ok({"items": rows, "next_cursor": next_cursor})
