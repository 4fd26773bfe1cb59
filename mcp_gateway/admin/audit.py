"""The audit log, queried: filters, newest first, cursor pagination."""

from __future__ import annotations

import re
import time

from starlette.requests import Request
from starlette.responses import Response

from ..audit import anchor as anchors
from ..errors import ApiError
from ..roles import Role
from ..store import audit as store
from ..when import FORMS, parse_time
from .common import admin, gateway, ok

FILTERS = ("team", "principal", "server", "tool", "decision", "kind")
MAX_LIMIT = 1000
MAX_CURSOR = 2**63 - 1
"""Cursors are row numbers (`seq`); none is larger than a signed 64-bit integer."""

_INT32 = 2**31 - 1
_WHOLE = re.compile(r"[0-9]{1,19}")


def _whole(request: Request, name: str, low: int, high: int, what: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    number = int(value) if _WHOLE.fullmatch(value.strip()) else None
    if number is None or not low <= number <= high:
        raise ApiError(400, "invalid_request", f"{name} must be {what}")
    return number


def _time(request: Request, name: str) -> float | None:
    """`since`/`until`: epoch seconds or ISO 8601, the forms the CLI's flags take."""
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name} must be {FORMS}") from None


@admin(Role.viewer)
async def query(request: Request, actor: str) -> Response:
    """Audit rows, newest first. Pass `cursor` from the previous page to get the next."""
    params = request.query_params
    filters = store.Filters(since=_time(request, "since"), until=_time(request, "until"))
    for name in FILTERS:
        setattr(filters, name, params.get(name))
    limit = _whole(request, "limit", 1, MAX_LIMIT, f"a whole number between 1 and {MAX_LIMIT}") or 100
    before = _whole(request, "cursor", 1, MAX_CURSOR, "the next_cursor of a previous page")
    engine = gateway(request).engine
    if before is not None and before > _INT32 and engine.dialect.name == "postgresql":
        before = None  # every row number there is 32-bit: all rows come before such a cursor
    rows = await store.query(engine, filters, before=before, limit=limit)
    next_cursor = str(rows[-1]["seq"]) if len(rows) == limit else None
    return ok({"items": rows, "next_cursor": next_cursor})


@admin(Role.viewer)
async def anchor(request: Request, actor: str) -> Response:
    """Each audit chain's head (position and hash): an anchor, as `mcp-gateway audit anchor` writes it."""
    gw = gateway(request)
    return ok(anchors.document(await store.heads(gw.engine), time.time()))
