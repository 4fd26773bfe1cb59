"""What an OIDC principal is held to: a team or nothing (refused and audited), the scope the
gateway requires, the kill switch by its stable id, its token's expiry for open streams, and
no passthrough of its token to upstreams."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from mcp.shared.exceptions import MCPError

from mcp_gateway.store.audit import Filters, query

from ..adversarial.test_streams import listen
from ..identity.test_upstream_credentials import recording_upstream
from ..support import admin_client, agent, http_upstream, wait_ready
from .common import oauth_gateway
from .provider import Provider

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
JSON = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def bearer_client(url: str, token: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=url.rsplit("/mcp", 1)[0], headers={"authorization": f"Bearer {token}"}, timeout=30
    )


async def test_a_token_that_maps_to_no_team_is_refused_with_the_reason_and_audited(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider) as (url, gw):
        token = await provider.token("agent-nobody", url)
        async with bearer_client(url, token) as http:
            refused = await http.post("/mcp", json=INITIALIZE, headers=JSON)
        rows = await query(gw.engine, Filters(kind="auth"))

    assert refused.status_code == 403
    assert "maps to no team" in refused.json()["error"]["message"]
    assert "marketing" in refused.json()["error"]["message"]
    assert [(r["subject"], r["issuer"], r["decision"]) for r in rows] == [("agent-nobody", provider.issuer, "deny")]


async def test_a_token_without_the_required_scope_gets_403_insufficient_scope(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider, required_scope="admin") as (url, _):
        without = await provider.token("agent-platform", url, scope="mcp")
        with_scope = await provider.token("agent-platform", url, scope="mcp admin")
        async with bearer_client(url, without) as http:
            refused = await http.post("/mcp", json=INITIALIZE, headers=JSON)
        async with bearer_client(url, with_scope) as http:
            admitted = await http.post("/mcp", json=INITIALIZE, headers=JSON)

    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="admin"' in challenge
    assert "resource_metadata=" in challenge
    assert admitted.status_code == 200, admitted.text


async def test_a_principal_kill_switch_stops_an_oidc_principal_whatever_token_it_brings(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider) as (url, gw):
        await wait_ready(gw)
        async with admin_client(url) as admin:
            engaged = await admin.post(
                "/kill-switches",
                json={"scope": "principal", "principal": "platform/agent-platform", "reason": "runaway agent"},
            )
        assert engaged.status_code == 201, engaged.text
        fresh = await provider.token("agent-platform", url)
        async with agent(url, fresh) as client:
            with pytest.raises(MCPError, match="runaway agent"):
                await client.call_tool("everything__echo", {"text": "x"})
        async with agent(url, await provider.token("agent-sales", url)) as client:
            assert not (await client.call_tool("everything__add", {"a": 1, "b": 2})).is_error


async def test_an_open_stream_ends_when_the_token_that_opened_it_expires(tmp_path: Path, provider: Provider) -> None:
    async with oauth_gateway(tmp_path, provider, clock_skew=0) as (url, gw):
        now = int(time.time())
        claims = {"aud": url, "sub": "agent-platform", "client_id": "agent-platform", "groups": ["eng-platform"]}
        token = await provider.sign({**claims, "iat": now, "exp": now + 3})
        async with bearer_client(url, token) as http:
            opened = await http.post("/mcp", json=INITIALIZE, headers=JSON)
            session = opened.headers["mcp-session-id"]
            listen = {"accept": "text/event-stream", "mcp-session-id": session}
            with anyio.fail_after(60):
                async with http.stream("GET", "/mcp", headers=listen) as stream:
                    assert stream.status_code == 200
                    async for _ in stream.aiter_bytes():
                        pass  # until the gateway ends the stream
            after = await http.post(
                "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers={**JSON, "mcp-session-id": session}
            )

    assert gw.governance.inflight.open_count("platform/agent-platform") == 0
    assert after.status_code == 401 and "expired" in after.json()["error"]["message"]


async def test_a_2026_07_28_listen_stream_ends_when_the_token_that_opened_it_expires(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider, clock_skew=0) as (url, gw):
        await wait_ready(gw)
        now = int(time.time())
        claims = {"aud": url, "sub": "agent-platform", "client_id": "agent-platform", "groups": ["eng-platform"]}
        token = await provider.sign({**claims, "iat": now, "exp": now + 3})
        frames = []
        async with listen(url, token, {"toolsListChanged": True}) as (response, next_frame):
            assert response.status_code == 200
            with anyio.fail_after(60):
                while (frame := await next_frame()) is not None:
                    frames.append(frame["method"])

    assert frames == ["notifications/subscriptions/acknowledged"]
    assert gw.governance.inflight.open_count("platform/agent-platform") == 0


async def test_the_upstream_never_sees_the_agents_access_token(tmp_path: Path, provider: Provider) -> None:
    async with recording_upstream() as (upstream_url, upstream):
        upstreams = {"rec": http_upstream(upstream_url)}
        async with oauth_gateway(tmp_path, provider, upstreams=upstreams) as (url, gw):
            await wait_ready(gw)
            token = await provider.token("agent-platform", url)
            async with agent(url, token) as client:
                result = await client.call_tool("rec__echo", {"text": "through the gateway"})

    assert not result.is_error
    assert any(b"through the gateway" in s.body for s in upstream.seen)
    signature = token.rsplit(".", 1)[1]
    for request in upstream.seen:
        assert "authorization" not in request.headers
        for name, value in request.headers.items():
            assert signature not in value, name
        assert signature.encode() not in request.body


async def test_an_upstream_that_asks_gets_the_callers_identity_signed_by_the_gateway_and_not_its_token(
    tmp_path: Path, provider: Provider
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (tmp_path / "identity.pem").write_bytes(pem)
    async with recording_upstream() as (upstream_url, upstream):
        upstreams = {"rec": http_upstream(upstream_url, identity_header="X-Caller-Identity")}
        async with oauth_gateway(
            tmp_path, provider, upstreams=upstreams, gateway={"identity_signing_key": {"$file": "identity.pem"}}
        ) as (url, gw):
            await wait_ready(gw)
            token = await provider.token("agent-platform", url)
            async with agent(url, token) as client:
                assert not (await client.call_tool("rec__echo", {"text": "who am I"})).is_error
            async with httpx2.AsyncClient(base_url=url.rsplit("/mcp", 1)[0]) as http:
                published = (await http.get("/.well-known/jwks.json")).json()

    calls = [s for s in upstream.seen if b'"tools/call"' in s.body]
    assert len(calls) == 1
    assertion = calls[0].headers["x-caller-identity"]
    verified = jwt.decode(
        assertion, jwt.PyJWK(published["keys"][0]).key, algorithms=["ES256"], audience="rec", issuer="mcp-gateway"
    )
    assert verified["sub"] == "platform/agent-platform" and verified["team"] == "platform"
    assert verified["idp_sub"] == "agent-platform" and verified["idp_iss"] == provider.issuer
    assert verified["exp"] - verified["iat"] <= 60
    listing = [s for s in upstream.seen if b'"tools/list"' in s.body]
    assert listing and all("x-caller-identity" not in s.headers for s in listing)  # the gateway's own requests
    assert token.rsplit(".", 1)[1] not in assertion
