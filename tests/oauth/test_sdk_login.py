"""A person logs in the way MCP clients do: the MCP Python SDK's own OAuth client
(`OAuthClientProvider`, authorization code with PKCE) meets the gateway's 401, reads its
protected resource metadata, finds the provider from it, and gets a token for the gateway;
the provider's login and consent are automated (its dev account `alice`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from mcp_gateway.store.audit import Filters, query

from ..support import wait_ready
from .common import oauth_gateway
from .provider import Provider

pytestmark = pytest.mark.anyio

REDIRECT = "http://127.0.0.1/callback"


class Memory(TokenStorage):
    """The client `sdk` is registered at the provider beforehand (no dynamic registration)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client = OAuthClientInformationFull(
            client_id="sdk", redirect_uris=[REDIRECT], token_endpoint_auth_method="none"
        )

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Browser:
    """Follows the authorization request through the provider's login and consent (which
    approve the dev account) to the redirect back to the client, as a browser would."""

    def __init__(self) -> None:
        self.result: AuthorizationCodeResult | None = None
        self.visited: list[str] = []

    async def open(self, authorization_url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
            url = authorization_url
            with anyio.fail_after(60):
                for _ in range(12):
                    self.visited.append(url.split("?")[0])
                    response = await http.get(url)
                    assert response.status_code in (302, 303), f"{url}: {response.status_code} {response.text[:300]}"
                    url = urljoin(url, response.headers["location"])
                    if url.startswith(REDIRECT):
                        query = parse_qs(urlsplit(url).query)
                        assert "code" in query, url
                        self.result = AuthorizationCodeResult(
                            code=query["code"][0], state=query["state"][0], iss=query.get("iss", [None])[0]
                        )
                        return
        raise AssertionError(f"no redirect back to the client after {self.visited}")

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


async def test_the_sdk_oauth_client_logs_in_through_the_gateways_metadata_and_calls_a_tool(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider, required_scope="mcp") as (url, gw):
        await wait_ready(gw)
        storage, browser = Memory(), Browser()
        auth = OAuthClientProvider(
            server_url=url,
            client_metadata=OAuthClientMetadata(
                redirect_uris=[REDIRECT],
                scope="openid mcp",
                grant_types=["authorization_code", "refresh_token"],
                token_endpoint_auth_method="none",
                client_name="sdk test",
            ),
            storage=storage,
            redirect_handler=browser.open,
            callback_handler=browser.callback,
        )
        async with (
            httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(60)) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            result = await client.call_tool("everything__echo", {"text": "logged in"})
        rows = await query(gw.engine, Filters(tool="echo", kind="decision"))

    assert not result.is_error
    assert storage.tokens is not None
    assert browser.visited[0] == f"{provider.issuer}/auth"  # the provider named in the gateway's metadata
    assert [(r["principal_id"], r["subject"], r["decision"]) for r in rows] == [("platform/alice", "alice", "allow")]
