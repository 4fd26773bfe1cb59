"""An attacker's review of identity: admin roles, the OAuth resource server and the dashboard.

The identity provider here is a small one of our own on loopback (a JWKS and an
introspection endpoint, served by uvicorn), so a test can publish keys the way some real
providers do (Entra ID's key set names no `alg`) and see what the gateway sends it.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp_gateway.oauth import introspection
from mcp_gateway.runtime import Gateway

from ..stores import postgres_database
from ..support import (
    ADMIN_TOKEN,
    ADMIN_TOKEN_ENV,
    admin_client,
    dashboard_log_in,
    environ,
    free_port,
    raw_client,
    serve,
    serving,
    write_config,
)

pytestmark = pytest.mark.anyio

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
KID = "rsa-1"


@dataclass
class Idp:
    """A provider on loopback: its signing key, and what it was asked."""

    issuer: str
    key: rsa.RSAPrivateKey
    introspected: list[str] = field(default_factory=list)
    active: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Opaque tokens the introspection endpoint calls active, with their claims."""

    def sign(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": KID, **(header or {})})


@asynccontextmanager
async def idp(publish_alg: bool = False) -> AsyncIterator[Idp]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk = {**public, "kid": KID, "use": "sig", **({"alg": "RS256"} if publish_alg else {})}
    provider = Idp("", key)

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [jwk]})

    async def introspect(request: Request) -> JSONResponse:
        form = await request.form()
        token = str(form.get("token"))
        provider.introspected.append(token)
        claims = provider.active.get(token)
        return JSONResponse({"active": True, **claims} if claims else {"active": False})

    app = Starlette(routes=[Route("/jwks", jwks), Route("/introspect", introspect, methods=["POST"])])
    async with serving(app) as port:
        provider.issuer = f"http://127.0.0.1:{port}"
        yield provider


@asynccontextmanager
async def gateway(
    tmp_path: Path, provider: Idp, auth: str = "oauth", **oauth: Any
) -> AsyncIterator[tuple[str, Gateway]]:
    port = free_port()
    settings = {
        "issuer": provider.issuer,
        "audience": f"http://127.0.0.1:{port}/mcp",
        "jwks_uri": f"{provider.issuer}/jwks",
        "teams": {"eng": "local"},
        "roles": {role: role for role in ("viewer", "operator", "admin")},
        **oauth,
    }
    config = write_config(tmp_path, {}, auth=auth, oauth=settings, admin_token={"$env": ADMIN_TOKEN_ENV})
    async with serve(config, port=port) as (url, gw):
        yield url, gw


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_a_token_whose_alg_does_not_fit_the_key_type_is_refused_401_not_a_server_error(
    tmp_path: Path,
) -> None:
    """A key set without `alg` (Entra ID publishes its keys so) and a made-up token whose
    header says EdDSA over the RSA key's kid: PyJWT raises InvalidKeyError, which is not an
    InvalidTokenError. Unauthenticated, it must be a plain 401 on /mcp and the admin API,
    not a 500 with a traceback per request."""
    async with idp() as provider, gateway(tmp_path, provider) as (url, gw):
        audience = gw.settings.oauth.audience  # type: ignore[union-attr]
        good = provider.sign({"aud": audience, "sub": "alice", "groups": ["eng"], "roles": ["viewer"]})
        _, payload, signature = good.split(".")
        forged = {alg: f"{_b64({'alg': alg, 'kid': KID})}.{payload}.{signature}" for alg in ("EdDSA", "ES256")}
        async with raw_client(url) as http:
            accepted = await http.get("/admin/api/status", headers={"Authorization": f"Bearer {good}"})
            assert accepted.status_code == 200, "the key set works: a real token passes"
            answers = {}
            for alg, token in forged.items():
                bearer = {"Authorization": f"Bearer {token}"}
                answers[alg] = (
                    (await http.post("/mcp", json=PING, headers=bearer)).status_code,
                    (await http.get("/admin/api/status", headers=bearer)).status_code,
                )
    assert answers == {"EdDSA": (401, 401), "ES256": (401, 401)}


@pytest.mark.parametrize("auth", ["oauth", "keys+oauth"])
async def test_the_gateways_own_keys_and_admin_tokens_are_never_sent_to_the_providers_introspection(
    tmp_path: Path, auth: str
) -> None:
    """An agent key or an admin token presented on /mcp (by mistake, or by an agent trying
    it) is a secret of this gateway: asking the provider about it hands it to a third party."""
    introspection = {
        "endpoint": "",
        "client_id": "gateway",
        "client_secret": {"$env": "REVIEW_ID_INTROSPECTION_SECRET"},
        "cache_seconds": 0,
    }
    with environ(REVIEW_ID_INTROSPECTION_SECRET="gateway-secret"):
        async with idp() as provider:
            introspection["endpoint"] = f"{provider.issuer}/introspect"
            async with gateway(tmp_path, provider, auth=auth, introspection=introspection) as (url, _):
                secrets = ["mgw_0123456789ab_" + "k" * 43, "mgwa_0123456789ab_" + "a" * 43]
                async with raw_client(url) as http:
                    statuses = [
                        (await http.post("/mcp", json=PING, headers={"Authorization": f"Bearer {s}"})).status_code
                        for s in secrets
                    ]
                    opaque = await http.post("/mcp", json=PING, headers={"Authorization": "Bearer opaque-token"})
    assert statuses == [401, 401]
    assert opaque.status_code == 401
    assert provider.introspected == ["opaque-token"], "only the opaque token was asked about"


async def test_a_flood_of_refused_dashboard_logins_writes_one_log_line_not_one_per_attempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The login form is open to anyone: one WARNING per refused token let an unauthenticated
    caller write the gateway's log as fast as it can post. The first refusal is logged at
    once (an operator sees the attempt); later ones within the interval are counted."""
    config = write_config(tmp_path, {}, auth="keys", policies=None)
    caplog.set_level(logging.WARNING, logger="mcp_gateway.dashboard")
    async with serve(config) as (url, _), raw_client(url) as http:
        answers = {(await http.post("/admin/login", data={"token": f"guess-{i}"})).status_code for i in range(30)}
    lines = [r.getMessage() for r in caplog.records if "login" in r.getMessage() and "refused" in r.getMessage()]
    assert answers == {401}
    assert len(lines) == 1, lines
    assert "from 127.0.0.1" in lines[0]


async def test_a_nul_in_a_dashboard_form_is_refused_and_fails_no_audit_batch_on_postgresql(tmp_path: Path) -> None:
    """The REST API refuses a NUL in a body before anything is written; the dashboard's
    forms skipped that check, so an operator's reason with a NUL reached the audit row
    (written first), which PostgreSQL text cannot hold: the whole group commit failed, with
    whatever agents' decision rows shared it, the writer went unhealthy (/readyz 503), and
    the one row that would say who did it is the one that was lost."""
    async with postgres_database() as database:
        config = write_config(tmp_path, {}, auth="keys", policies=None, database_url=database)
        async with serve(config) as (url, gw):
            async with httpx2.AsyncClient(base_url=url.removesuffix("/mcp"), timeout=30) as http:
                csrf = await dashboard_log_in(http)
                release = await http.post(
                    "/admin/kill-switches/nothing/release", data={"csrf": csrf, "reason": "drill\x00"}
                )
                engage = await http.post(
                    "/admin/kill-switches", data={"csrf": csrf, "scope": "team", "team": "ghost", "reason": "x\x00"}
                )
                long_reason = await http.post(
                    "/admin/kill-switches/nothing/release", data={"csrf": csrf, "reason": "r" * 5000}
                )
            failures = gw.governance.writer.failures
    assert (release.status_code, engage.status_code, long_reason.status_code) == (400, 400, 400)
    assert failures == 0, "no audit batch failed"


@pytest.mark.parametrize("name", ["alice\u200b", "\u202eecila", "alice\u00a0", " alice"])
async def test_a_principal_name_with_invisible_or_surrounding_characters_is_refused_not_passed_off_as_another(
    tmp_path: Path, name: str
) -> None:
    """`platform/alice` and `platform/alice<ZWSP>` look the same on the dashboard and in the
    audit, but a principal kill switch on the one does not stop the other (and the
    dashboard's audit filter drops an unprintable value, so the second cannot even be looked
    up there). A name the provider lets a user choose must be one an operator can type."""
    async with idp() as provider, gateway(tmp_path, provider) as (url, gw):
        audience = gw.settings.oauth.audience  # type: ignore[union-attr]
        tokens = {n: provider.sign({"aud": audience, "sub": n, "groups": ["eng"]}) for n in ("alice", name)}
        async with raw_client(url) as http:
            answers = {
                n: await http.post("/mcp", json=PING, headers={"Authorization": f"Bearer {t}"})
                for n, t in tokens.items()
            }
    assert answers["alice"].status_code not in (401, 403), answers["alice"].text
    assert answers[name].status_code == 403, answers[name].text
    assert "usable" in answers[name].text


async def test_a_stored_admin_token_used_only_on_the_dashboard_shows_as_used(tmp_path: Path) -> None:
    """`last_used_at` is what an operator reads to find tokens to revoke (and a stolen one
    in use): the REST API noted each use, the dashboard none, so a token used only there,
    by its owner or by whoever took it, was listed as never used."""
    config = write_config(tmp_path, {}, auth="keys", policies=None)
    async with serve(config) as (url, _):
        base = url.removesuffix("/mcp")
        async with admin_client(url) as admin:
            made = (await admin.post("/admin-tokens", json={"name": "wall-screen", "role": "viewer"})).json()
        async with httpx2.AsyncClient(base_url=base, timeout=30) as browser:
            assert (await browser.post("/admin/login", data={"token": made["token"]})).status_code == 303
            assert (await browser.get("/admin")).status_code == 200
        used = None
        with anyio.move_on_after(10):  # the use is written in the background, within a store round trip
            while used is None:
                async with admin_client(url) as admin:
                    rows = (await admin.get("/admin-tokens")).json()["items"]
                used = next(r["last_used_at"] for r in rows if r["id"] == made["id"])
                await anyio.sleep(0.05)
    assert used is not None


async def test_an_admin_token_cannot_take_a_name_the_audit_already_gives_to_someone_else(tmp_path: Path) -> None:
    """The audit names the actor by the token's name only: two tokens called `oncall`, or a
    stored token called `admin-token` (the configured token's actor name), made the audit
    unable to say which credential acted, and so which one to revoke after an incident."""
    config = write_config(tmp_path, {}, auth="keys", policies=None)
    async with serve(config) as (url, _), admin_client(url) as admin:
        first = await admin.post("/admin-tokens", json={"name": "oncall", "role": "operator"})
        await admin.delete(f"/admin-tokens/{first.json()['id']}")
        again = await admin.post("/admin-tokens", json={"name": "oncall", "role": "admin"})
        built_in = [
            (await admin.post("/admin-tokens", json={"name": name, "role": "viewer"})).status_code
            for name in ("admin-token", "local-admin")
        ]
        names = [t["name"] for t in (await admin.get("/admin-tokens")).json()["items"]]
    assert first.status_code == 201
    assert again.status_code == 409, again.text
    assert "oncall" in again.json()["error"]["message"]
    assert built_in == [409, 409]
    assert names == ["oncall"]


@pytest.mark.parametrize(
    "headers",
    [{"X-Forwarded-Proto": "https"}, {"Origin": "https://localhost"}],
    ids=["forwarded-proto", "origin"],
)
async def test_a_dashboard_login_made_over_https_through_a_tls_proxy_gets_a_secure_cookie(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    """The cookie carries the admin token (sealed): it must never go out over plain HTTP.
    The gateway runs without proxy headers, so behind a TLS-terminating proxy every request
    it sees is http and the cookie was never `Secure`: one visit to the http:// address (a
    redirect to https, a typed URL) sent it in clear, replayable for eight hours."""
    config = write_config(tmp_path, {}, auth="keys", policies=None)
    async with serve(config) as (url, _), httpx2.AsyncClient(base_url=url.removesuffix("/mcp"), timeout=30) as http:
        proxied = await http.post("/admin/login", data={"token": ADMIN_TOKEN}, headers=headers)
        direct = await http.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert proxied.status_code == direct.status_code == 303
    assert "secure" in proxied.headers["set-cookie"].lower()
    assert "secure" not in direct.headers["set-cookie"].lower(), "plain http on loopback (development) keeps working"


async def test_a_page_on_another_loopback_port_cannot_act_as_the_local_admin_of_an_auth_none_gateway(
    tmp_path: Path,
) -> None:
    """An `auth: none` loopback gateway lets its own machine use the admin API without a
    token. Origins on loopback pass the DNS-rebinding check whatever their port, and a
    browser sends a `text/plain` POST cross-origin without a preflight: any page served on
    this machine (a dev server, a tool's web UI) could engage a global kill switch or
    create a token that locks the local admin out. Its response is unreadable, its action
    was not. The local admin is the gateway's own origin, or a caller with no Origin."""
    config = write_config(tmp_path, {}, auth="none")
    async with serve(config) as (url, _), raw_client(url) as http:
        port = url.split(":")[2].split("/")[0]
        body = '{"scope": "global", "reason": "drill"}'
        plain = {"content-type": "text/plain"}
        elsewhere = await http.post(
            "/admin/api/kill-switches", content=body, headers={**plain, "Origin": "http://localhost:5173"}
        )
        itself = await http.post(
            "/admin/api/kill-switches", content=body, headers={**plain, "Origin": f"http://127.0.0.1:{port}"}
        )
        no_origin = await http.get("/admin/api/kill-switches")
    assert elsewhere.status_code == 401, elsewhere.text
    assert itself.status_code == 201, itself.text
    assert len(no_origin.json()["items"]) == 1, "only the gateway's own origin engaged one"


async def test_a_flood_of_made_up_opaque_tokens_does_not_evict_the_cached_answers_for_real_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers are cached so an agent's token is not asked about on every request. Refusals
    shared that table: made-up tokens (free to send, no credential needed) pushed the real
    answers out, so real tokens went back to the provider, competing with the flood for the
    `max_concurrent` questions (past which a token is refused). The table is made small
    here so the flood is short."""
    monkeypatch.setattr(introspection, "MAX_CACHED", 4)
    settings = {"endpoint": "", "client_id": "gateway", "client_secret": {"$env": "REVIEW_ID_INTROSPECTION_SECRET"}}
    with environ(REVIEW_ID_INTROSPECTION_SECRET="gateway-secret"):
        async with idp() as provider:
            settings["endpoint"] = f"{provider.issuer}/introspect"
            async with gateway(tmp_path, provider, introspection={**settings, "cache_seconds": 300}) as (url, gw):
                audience = gw.settings.oauth.audience  # type: ignore[union-attr]
                claims = {"iss": provider.issuer, "aud": audience, "exp": time.time() + 300, "sub": "alice"}
                provider.active["real-token"] = {**claims, "groups": ["eng"]}
                async with raw_client(url) as http:

                    async def send(token: str) -> int:
                        headers = {"Authorization": f"Bearer {token}"}
                        return (await http.post("/mcp", json=PING, headers=headers)).status_code

                    first = await send("real-token")
                    flood = {await send(f"made-up-{i}") for i in range(12)}
                    again = await send("real-token")
    assert first == again and first not in (401, 403)
    assert flood == {401}
    assert provider.introspected.count("real-token") == 1, "its answer was still cached"
