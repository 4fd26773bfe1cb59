"""A running gateway with a policy directory: calling through it, polling it, reading its
audit log over the admin API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp.shared.exceptions import MCPError

from mcp_gateway.errors import GATEWAY_DENIED

from ..support import admin_client, stdio_upstream, write_config

T = TypeVar("T")
BOUND = 15.0
"""Seconds a poll may take before the test fails: a bound against hanging, not a timing claim."""


# A bundle that lets team local use server x, and the same with x's echo denied.
ALLOW = {"teams": {"local": {"rules": [{"id": "local-x", "allow": {"servers": ["x"]}}]}}}
DENY_ECHO = {
    "teams": {
        "local": {
            "rules": [
                {"id": "local-x", "allow": {"servers": ["x"]}},
                {"id": "no-echo", "deny": {"servers": ["x"], "tools": ["echo"]}},
            ]
        }
    }
}


def policy_gateway(
    directory: Path, store_url: str, *, watch: bool = False, upstreams: tuple[str, ...] = ("x",)
) -> Path:
    """A config (auth none: principal `local` of team `local`) with the policy directory
    `directory/policies`, which the test writes itself."""
    return write_config(
        directory,
        {name: stdio_upstream() for name in upstreams},
        policies="policies",
        watch_policies=watch,
        database_url=store_url,
    )


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, bound: float = BOUND) -> T:
    """Poll `check` until it returns something other than None."""
    try:
        with anyio.fail_after(bound):
            while True:
                value = await check()
                if value is not None:
                    return value
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {bound} s: {what}") from None


async def outcome(client: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """`{"allowed": result}` or `{"denied": error data}` for one tool call."""
    try:
        result = await client.call_tool(tool, arguments)
    except MCPError as exc:
        assert exc.error.code == GATEWAY_DENIED, exc.error
        return {"denied": exc.error.data}
    return {"allowed": result}


async def get(url: str, path: str, **params: Any) -> Any:
    async with admin_client(url) as admin:
        response = await admin.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def audit_rows(url: str, **filters: str) -> list[dict[str, Any]]:
    """Audit rows matching `filters`, oldest first."""
    page = await get(url, "/audit", limit=1000, **filters)
    assert page["next_cursor"] is None, "more rows than one page"
    return list(reversed(page["items"]))
