"""The gateway as an OAuth 2.1 resource server, against a real OpenID provider
(`oidc-provider`, tests/oidc/provider.mjs): agents with client credentials call tools as the
team their claims map to; every token not issued for this gateway, by its issuer, with one of
its keys, now, is refused with 401."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from pathlib import Path

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.shared.exceptions import MCPError

from mcp_gateway.audit.verify import verify
from mcp_gateway.store.audit import Filters, query

from ..support import agent, raw_client, wait_ready
from .common import b64, oauth_gateway, unsigned
from .provider import Provider

pytestmark = pytest.mark.anyio


async def test_an_agent_with_client_credentials_calls_tools_as_the_team_its_groups_map_to(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider) as (url, gw):
        await wait_ready(gw)
        platform = await provider.token("agent-platform", url)
        sales = await provider.token("agent-sales", url)
        async with agent(url, platform) as client:
            result = await client.call_tool("everything__echo", {"text": "hello"})
            assert not result.is_error
        async with agent(url, sales) as client:
            listed = {t.name for t in (await client.list_tools()).tools}
            with pytest.raises(MCPError, match="Denied by the gateway"):
                await client.call_tool("everything__echo", {"text": "hello"})
        rows = await query(gw.engine, Filters(tool="echo", kind="decision"))
        report = await verify(gw.engine)

    assert report.ok, report.first  # the hash chain covers subject and issuer
    assert listed == {"everything__add"}
    by_principal = {row["principal_id"]: row for row in rows}
    assert by_principal["platform/agent-platform"]["decision"] == "allow"
    assert by_principal["sales/agent-sales"]["decision"] == "deny"
    for row in rows:
        assert row["issuer"] == provider.issuer
        assert row["subject"] == row["principal_id"].split("/")[1]


async def test_a_request_without_a_token_gets_401_pointing_at_the_protected_resource_metadata(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider) as (url, _), raw_client(url) as http:
        refused = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        suffixed = await http.get("/.well-known/oauth-protected-resource/mcp")
        plain = await http.get("/.well-known/oauth-protected-resource")

    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    base = url.removesuffix("/mcp")
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert suffixed.status_code == plain.status_code == 200
    assert suffixed.json() == plain.json()
    assert suffixed.json()["resource"] == url
    assert suffixed.json()["authorization_servers"] == [provider.issuer]


async def test_tokens_not_issued_for_this_gateway_by_its_issuer_now_are_refused_with_401(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider) as (url, _), raw_client(url) as http:
        now = int(time.time())
        claims = {"aud": url, "sub": "agent-platform", "client_id": "agent-platform", "groups": ["eng-platform"]}
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        good = await provider.token("agent-platform", url)
        header, payload, _ = good.split(".")
        tokens = {
            "another audience": await provider.token("agent-platform", "https://other.example.com/mcp"),
            "expired": await provider.sign({**claims, "iat": now - 900, "exp": now - 600}),
            "not yet valid": await provider.sign({**claims, "nbf": now + 600}),
            "issued in the future": await provider.sign({**claims, "iat": now + 600, "exp": now + 900}),
            "another issuer": await provider.sign({**claims, "iss": "http://127.0.0.1:9/other"}),
            "unknown key": jwt.encode(
                {**claims, "iss": provider.issuer, "iat": now, "exp": now + 300},
                stranger,
                algorithm="RS256",
                headers={"kid": str(uuid.uuid4())},
            ),
            "alg none": unsigned({"alg": "none", "typ": "JWT"}, {**claims, "iss": provider.issuer, "exp": now + 300}),
            "HS256 with the client secret": (
                lambda signing: (
                    signing + "." + b64(hmac.new(b"agent-platform-secret", signing.encode(), hashlib.sha256).digest())
                )
            )(b64(b'{"alg":"HS256","typ":"JWT"}') + "." + payload),
            "signature of another token": f"{header}.{payload}.{b64(b'x' * 256)}",
            "not a JWT": "opaque-token-value",
        }
        answers = {}
        for what, token in tokens.items():
            response = await http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Authorization": f"Bearer {token}"},
            )
            answers[what] = (response.status_code, response.headers.get("www-authenticate", ""))
        accepted = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={"Authorization": f"Bearer {good}", "Mcp-Protocol-Version": "2026-07-28"},
        )

    for what, (status, challenge) in answers.items():
        assert status == 401, what
        assert 'error="invalid_token"' in challenge and "resource_metadata=" in challenge, what
    assert accepted.status_code not in (401, 403), accepted.text  # the same request, with a good token


async def test_key_rotation_at_the_provider_is_picked_up_without_restart(tmp_path: Path, provider: Provider) -> None:
    async with oauth_gateway(tmp_path, provider, jwks_min_refresh_interval=0) as (url, gw):
        await wait_ready(gw)
        before = await provider.token("agent-platform", url)
        async with agent(url, before) as client:
            assert not (await client.call_tool("everything__echo", {"text": "old key"})).is_error
        kid = await provider.rotate()
        after = await provider.token("agent-platform", url)
        async with agent(url, after) as client:
            assert not (await client.call_tool("everything__echo", {"text": "new key"})).is_error

    assert jwt.get_unverified_header(after)["kid"] == kid != jwt.get_unverified_header(before)["kid"]


async def test_a_flood_of_unknown_key_ids_fetches_the_keys_at_most_once_per_interval(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider, jwks_min_refresh_interval=3600) as (url, gw):
        assert gw.oauth is not None
        keys = gw.oauth.verifier.keys
        good = await provider.token("agent-platform", url)
        async with raw_client(url) as http:
            ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            first = await http.post("/mcp", json=ping, headers={"Authorization": f"Bearer {good}"})
            fetched = keys.fetches
            claims = {"aud": url, "sub": "x", "groups": ["eng-platform"]}
            bogus = [await provider.sign(claims, {"kid": str(uuid.uuid4())}) for _ in range(20)]
            statuses = []
            async with anyio.create_task_group() as tg:

                async def send(token: str) -> None:
                    response = await http.post("/mcp", json=ping, headers={"Authorization": f"Bearer {token}"})
                    statuses.append(response.status_code)

                for token in bogus:
                    tg.start_soon(send, token)

    assert first.status_code != 401 and fetched == 1
    assert statuses == [401] * 20
    assert keys.fetches == 1


def hs256(signing_input: str) -> str:
    """An HMAC token keyed with a secret the provider shares with the client (its client secret)."""
    mac = hmac.new(b"agent-platform-secret", signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"
