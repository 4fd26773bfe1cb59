"""What the admin tests share: the `mcp-gateway` command as a real subprocess, and the
whole audit log read back through the admin API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import anyio
import httpx2


async def mcp_gateway(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run `mcp-gateway ARGS` to completion. The test runner's MCP_GATEWAY_* variables are
    left out, so only the config file and `env` shape the command's settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    with anyio.fail_after(timeout):
        return await anyio.run_process(
            [sys.executable, "-m", "mcp_gateway", *args], env={**clean, **(env or {})}, check=False
        )


async def audit_rows(admin: httpx2.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    """Every audit row matching `filters`, newest first, following the cursor to the end."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**filters, "limit": "1000", **({"cursor": cursor} if cursor else {})}
        response = await admin.get("/audit", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


async def settled_audit(
    admin: httpx2.AsyncClient, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 15
) -> list[dict[str, Any]]:
    """The audit log once `done(rows)` holds: completion rows are queued, not awaited, by
    the calls they describe, so a test waits for them before it counts."""
    with anyio.fail_after(timeout):
        while True:
            rows = await audit_rows(admin)
            if done(rows):
                return rows
            await anyio.sleep(0.05)


def completions(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    """`done` for `settled_audit`: at least `count` completion rows are in."""
    return lambda rows: sum(r["kind"] == "completion" for r in rows) >= count
