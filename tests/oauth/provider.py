"""The real OpenID provider for the OAuth tests: tests/oidc/provider.mjs (npm `oidc-provider`)
run by scripts/oidc-provider, which installs it into a cache on first use (Node.js 20+ and npm)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2

from ..support import ROOT

SCRIPT = ROOT / "scripts" / "oidc-provider"


class Provider:
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.http = httpx2.AsyncClient(base_url=issuer, timeout=30)

    async def token(self, client: str, resource: str, scope: str = "mcp") -> str:
        """An access token for `resource` by the client credentials grant."""
        response = await self.http.post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client,
                "client_secret": f"{client}-secret",
                "resource": resource,
                "scope": scope,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def sign(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        """Any claims, signed with the provider's current key (iss, iat, exp default to valid)."""
        response = await self.http.post("/test/sign", json={"claims": claims, "header": header or {}})
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    async def rotate(self) -> str:
        """A new signing key, published first; returns its kid."""
        response = await self.http.post("/test/rotate")
        assert response.status_code == 200, response.text
        return str(response.json()["kid"])


def install() -> None:
    """Install the provider's npm package into its cache (once; fast afterwards). Part of CI:
    a missing Node.js is a failure, not a skip."""
    done = subprocess.run([str(SCRIPT), "--install-only"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"scripts/oidc-provider could not install (needs node and npm): {done.stderr}"


@asynccontextmanager
async def oidc_provider() -> AsyncIterator[Provider]:
    """The provider on a random loopback port, for the length of the block."""
    process = await anyio.open_process([str(SCRIPT), "--port", "0"], stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        line = b""
        with anyio.fail_after(60):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive(1)
                line += chunk
        assert line.startswith(b"listening "), line
        provider = Provider(line.decode().split()[1])
        try:
            yield provider
        finally:
            await provider.http.aclose()
    finally:
        process.terminate()
        with anyio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
        await process.aclose()
