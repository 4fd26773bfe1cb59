"""A gateway trusting the test provider: teams `platform` (every tool of the everything
server) and `sales` (only `add`), groups `eng-platform` and `eng-sales` mapped to them."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp_gateway.runtime import Gateway

from ..support import ADMIN_TOKEN_ENV, free_port, serve, stdio_upstream, write_config, write_policies
from .provider import Provider

POLICY = {
    "teams": {
        "platform": {"rules": [{"id": "platform-all", "allow": {"servers": ["*"]}}]},
        "sales": {"rules": [{"id": "sales-add", "allow": {"servers": ["everything"], "tools": ["add"]}}]},
    }
}


def oauth_settings(provider: Provider, audience: str, **extra: Any) -> dict[str, Any]:
    return {
        "issuer": provider.issuer,
        "audience": audience,
        "teams": {"eng-platform": "platform", "eng-sales": "sales"},
        **extra,
    }


@asynccontextmanager
async def oauth_gateway(
    tmp_path: Path,
    provider: Provider,
    upstreams: dict[str, Any] | None = None,
    auth: str = "oauth",
    gateway: dict[str, Any] | None = None,
    **oauth: Any,
) -> AsyncIterator[tuple[str, Gateway]]:
    """The gateway on a port chosen first, so its resource URI (the tokens' audience) is known."""
    port = free_port()
    audience = f"http://127.0.0.1:{port}/mcp"
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(
        tmp_path,
        upstreams if upstreams is not None else {"everything": stdio_upstream()},
        auth=auth,
        oauth=oauth_settings(provider, audience, **oauth),
        policies="policies",
        admin_token={"$env": ADMIN_TOKEN_ENV},
        **(gateway or {}),
    )
    async with serve(config, port=port) as (url, gateway):
        yield url, gateway


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT put together by hand (for `alg: none` and HMAC tokens no library would make)."""
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)])
