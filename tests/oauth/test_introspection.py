"""Opaque access tokens, checked with the provider's introspection endpoint (RFC 7662): an
active one reaches tools as its team; a revoked one is refused once the cached answer ends;
one address flooding made-up tokens cannot keep another's real one out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from ..support import agent, environ, raw_client, serving, wait_ready
from .common import oauth_gateway
from .provider import Provider
from .test_oauth_principals import INITIALIZE, JSON

pytestmark = pytest.mark.anyio

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


async def test_an_opaque_token_is_checked_by_introspection_and_a_revoked_one_is_refused(
    tmp_path: Path, provider: Provider
) -> None:
    introspection = {
        "endpoint": f"{provider.issuer}/token/introspection",
        "client_id": "gateway",
        "client_secret": {"$env": "GATEWAY_TEST_INTROSPECTION_SECRET"},
        "cache_seconds": 0,
    }
    with environ(GATEWAY_TEST_INTROSPECTION_SECRET="gateway-secret"):
        async with oauth_gateway(tmp_path, provider, introspection=introspection) as (url, gw):
            await wait_ready(gw)
            token = await provider.token("agent-opaque", url)
            async with agent(url, token) as client:
                assert not (await client.call_tool("everything__echo", {"text": "opaque"})).is_error
            revoked = await provider.http.post(
                "/token/revocation",
                data={"token": token, "client_id": "agent-opaque", "client_secret": "agent-opaque-secret"},
            )
            async with raw_client(url) as http:
                after = await http.post("/mcp", json=PING, headers={"Authorization": f"Bearer {token}"})
                made_up = await http.post("/mcp", json=PING, headers={"Authorization": "Bearer not-a-real-token"})

    assert token.count(".") != 2  # opaque indeed
    assert revoked.status_code == 200
    assert after.status_code == made_up.status_code == 401
    assert "not active" in after.json()["error"]["message"]


class HeldIntrospection:
    """An introspection endpoint on loopback in front of the real provider's: a question about
    a `junk-` token is held until `release`, any other is passed on and answered by the provider."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.held = 0
        self.passed_on: list[str] = []
        self.released = anyio.Event()
        self.on_hold: Callable[[], None] = lambda: None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        token = parse_qs(body.decode())["token"][0]
        if token.startswith("junk-"):
            self.held += 1
            self.on_hold()
            await self.released.wait()
            status, answer = 200, b'{"active": false}'
        else:
            self.passed_on.append(token)
            headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in (b"authorization", b"content-type")}
            response = await self.provider.http.post("/token/introspection", content=body, headers=headers)
            status, answer = response.status_code, response.content
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


def from_other_address(url: str) -> httpx2.AsyncClient:
    """A client of the gateway at `url` whose connections come from 127.0.0.2 (loopback is all of 127/8)."""
    transport = httpx2.AsyncHTTPTransport(local_address="127.0.0.2")
    return httpx2.AsyncClient(base_url=url.rsplit("/mcp", 1)[0], transport=transport, timeout=30)


async def sign_in(http: httpx2.AsyncClient, door: str, token: str) -> httpx2.Response:
    """An agent opening a session on /mcp, or an operator reading the admin API."""
    if door == "mcp":
        return await http.post("/mcp", json=INITIALIZE, headers={**JSON, "Authorization": f"Bearer {token}"})
    return await http.get("/admin/api/kill-switches", headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(("door", "client"), [("mcp", "agent-opaque"), ("admin", "ops-opaque")])
async def test_one_address_flooding_junk_opaque_tokens_does_not_keep_another_address_out(
    tmp_path: Path, provider: Provider, door: str, client: str
) -> None:
    endpoint = HeldIntrospection(provider)
    flood = 24
    answers: list[httpx2.Response] = []
    settled = anyio.Event()  # every junk token is held at the provider or was refused

    def note() -> None:
        if endpoint.held + len(answers) == flood:
            settled.set()

    endpoint.on_hold = note
    async with serving(endpoint) as port:
        introspection: dict[str, Any] = {
            "endpoint": f"http://127.0.0.1:{port}/introspect",
            "client_id": "gateway",
            "client_secret": {"$env": "GATEWAY_TEST_INTROSPECTION_SECRET"},
        }
        oauth: dict[str, Any] = {"introspection": introspection, "fetch_timeout": 30, "roles": {"viewer": "viewer"}}
        with environ(GATEWAY_TEST_INTROSPECTION_SECRET="gateway-secret"):
            async with (
                oauth_gateway(tmp_path, provider, **oauth) as (url, gw),
                raw_client(url) as flooder,  # from 127.0.0.1
                from_other_address(url) as other,
            ):
                await wait_ready(gw)
                token = await provider.token(client, url, scope="admin" if door == "admin" else "mcp")

                async def junk(i: int) -> None:
                    headers = {"Authorization": f"Bearer junk-{i}"}
                    answers.append(await flooder.post("/mcp", json=PING, headers=headers))
                    note()

                try:
                    async with anyio.create_task_group() as tg:
                        for i in range(flood):
                            tg.start_soon(junk, i)
                        with anyio.fail_after(20):
                            await settled.wait()
                        held, refused_at_once = endpoint.held, list(answers)
                        legitimate = await sign_in(other, door, token)
                        endpoint.released.set()
                finally:
                    endpoint.released.set()

    assert token.count(".") != 2  # opaque indeed
    assert legitimate.status_code == 200, legitimate.text
    assert endpoint.passed_on == [token]
    assert held == 4  # the flooder's share of max_concurrent (16): the rest cost the provider nothing
    assert len(refused_at_once) == flood - held
    assert all(r.status_code == 401 and "from this address" in r.text for r in refused_at_once)
    assert len(answers) == flood and all(r.status_code == 401 for r in answers)
