"""The dashboard's session and forms over real HTTP: who gets in, what a form needs, what
the page escapes. (The clicking is in tests/browser.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.routing import Route

from mcp_gateway.dashboard.login import COOKIE

from ..support import (
    ADMIN_TOKEN,
    admin_client,
    dashboard_client,
    dashboard_log_in,
    free_port,
    page_csrf,
    serve,
    stdio_upstream,
    wait_ready,
    write_config,
    write_policies,
)

pytestmark = pytest.mark.anyio

POLICY = {"teams": {"ops": {"rules": [{"id": "ops-all", "allow": {"servers": ["*"]}}]}}}


@pytest.fixture
async def gateway(tmp_path: Path):  # type: ignore[no-untyped-def]
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(tmp_path, {"x": stdio_upstream()}, auth="keys", policies="policies")
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url.removesuffix("/mcp"), gw


browser = dashboard_client


@asynccontextmanager
async def logged_in(base: str, token: str = ADMIN_TOKEN) -> AsyncIterator[tuple[httpx2.AsyncClient, str]]:
    """A client holding a session cookie, and the CSRF token its page carries."""
    async with browser(base) as client:
        yield client, await dashboard_log_in(client, token)


async def switches(base: str) -> list[dict[str, Any]]:
    async with admin_client(base + "/mcp") as admin:
        return list((await admin.get("/kill-switches")).json()["items"])


async def admin_rows(base: str) -> list[str]:
    async with admin_client(base + "/mcp") as admin:
        rows = (await admin.get("/audit", params={"kind": "admin"})).json()["items"]
    return [row["method"] for row in rows]


async def test_the_page_sends_a_visitor_without_a_session_to_log_in(gateway: Any) -> None:
    base, _ = gateway
    async with browser(base) as client:
        page = await client.get("/admin")
        assert page.status_code == 303 and page.headers["location"] == "/admin/login"
        assert (await client.get("/admin/part/audit")).status_code == 401
        form = await client.get("/admin/login")
        assert form.status_code == 200 and 'name="token"' in form.text


async def test_dashboard_pages_may_not_be_framed_or_load_from_elsewhere(gateway: Any) -> None:
    base, _ = gateway
    async with logged_in(base) as (client, _):
        for path in ("/admin", "/admin/part/switches", "/admin/login"):
            headers = (await client.get(path)).headers
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "default-src 'self'" in headers["content-security-policy"]
            assert headers["x-frame-options"] == "DENY"
            assert headers["cache-control"] == "no-store"


async def test_a_wrong_token_gets_no_session(gateway: Any) -> None:
    base, _ = gateway
    async with browser(base) as client:
        response = await client.post("/admin/login", data={"token": "mgwa_nope_not-a-token"})
        assert response.status_code == 401
        assert COOKIE not in response.cookies
        assert "not a valid admin token" in response.text


async def test_the_session_cookie_is_http_only_strict_and_scoped_to_the_dashboard(gateway: Any) -> None:
    base, _ = gateway
    async with browser(base) as client:
        response = await client.post("/admin/login", data={"token": ADMIN_TOKEN})
        header = response.headers["set-cookie"].lower()
        assert "httponly" in header and "samesite=strict" in header and "path=/admin" in header
        assert ADMIN_TOKEN.lower() not in header  # the token is inside, encrypted


async def test_a_form_without_the_csrf_token_engages_nothing_and_writes_nothing(gateway: Any) -> None:
    """What another site's page could send through a logged-in operator's browser."""
    base, _ = gateway
    async with logged_in(base) as (client, csrf):
        before = await admin_rows(base)
        for sent in ({}, {"csrf": "forged"}, {"csrf": csrf + "x"}):
            form = {"scope": "global", "reason": "a forged form", **sent}
            response = await client.post("/admin/kill-switches", data=form)
            assert response.status_code == 403
        assert await switches(base) == []
        assert await admin_rows(base) == before


async def test_a_form_posted_from_another_origin_is_refused_even_with_the_csrf_token(gateway: Any) -> None:
    base, _ = gateway
    async with logged_in(base) as (client, csrf):
        form = {"csrf": csrf, "scope": "global", "reason": "from elsewhere"}
        for origin in ("https://evil.example", "null"):
            response = await client.post("/admin/kill-switches", data=form, headers={"Origin": origin})
            assert response.status_code == 403
        assert await switches(base) == []


async def test_a_form_with_the_csrf_token_engages_through_the_api_path_and_is_audited(gateway: Any) -> None:
    base, _ = gateway
    async with logged_in(base) as (client, csrf):
        form = {"csrf": csrf, "scope": "server", "server": "x", "reason": "from the page", "expires_in_minutes": "5"}
        response = await client.post("/admin/kill-switches", data=form)
        assert response.status_code == 303
        [engaged] = await switches(base)
        assert (engaged["scope"], engaged["target"], engaged["actor"]) == ("server", "x", "admin-token")
        assert engaged["expires_at"] is not None
        assert (await admin_rows(base))[0] == "killswitch.engage"
        released = await client.post(f"/admin/kill-switches/{engaged['id']}/release", data={"csrf": csrf})
        assert released.status_code == 303
        assert await switches(base) == []
        assert (await admin_rows(base))[0] == "killswitch.release"


async def test_an_invalid_form_is_refused_with_the_reason_on_the_page(gateway: Any) -> None:
    base, _ = gateway
    async with logged_in(base) as (client, csrf):
        response = await client.post("/admin/kill-switches", data={"csrf": csrf, "scope": "tool", "reason": "r"})
        assert response.status_code == 400
        assert "scope &#39;tool&#39; needs `server`" in response.text
        response = await client.post(
            "/admin/kill-switches", data={"csrf": csrf, "scope": "global", "reason": "r", "expires_in_minutes": "soon"}
        )
        assert response.status_code == 400 and "minutes" in response.text
        missing = await client.post("/admin/kill-switches/nope/release", data={"csrf": csrf})
        assert missing.status_code == 404
        assert await switches(base) == []


async def test_a_tampered_or_foreign_cookie_is_no_session(gateway: Any, tmp_path: Path) -> None:
    base, _ = gateway
    async with logged_in(base) as (client, _):
        value = client.cookies[COOKIE]
        for forged in (value[:-4] + "AAAA", "x" * 5000, "not-a-fernet-token"):
            async with browser(base) as other:
                other.cookies.set(COOKIE, forged, path="/admin")
                assert (await other.get("/admin")).status_code == 303
    # A cookie from another gateway (another store, another secret) opens nothing here.
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    write_policies(other_dir / "policies", POLICY)
    config = write_config(other_dir, {"x": stdio_upstream()}, auth="keys", policies="policies")
    async with serve(config) as (other_url, other_gw):
        await wait_ready(other_gw)
        async with logged_in(other_url.removesuffix("/mcp")) as (foreign, _), browser(base) as client:
            client.cookies.set(COOKIE, foreign.cookies[COOKIE], path="/admin")
            assert (await client.get("/admin")).status_code == 303


async def test_what_operators_and_agents_wrote_is_escaped_on_the_page(gateway: Any) -> None:
    base, _ = gateway
    async with admin_client(base + "/mcp") as admin:
        reason = "<script>alert(1)</script><img src=x onerror=alert(2)>"
        response = await admin.post("/kill-switches", json={"scope": "global", "reason": reason})
        assert response.status_code == 201
    async with logged_in(base) as (client, _):
        page = (await client.get("/admin")).text
        part = (await client.get("/admin/part/switches")).text
    for html in (page, part):
        assert "<script>alert(1)" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_logging_out_ends_the_session(gateway: Any) -> None:
    base, _ = gateway
    async with logged_in(base) as (client, csrf):
        response = await client.post("/admin/logout", data={"csrf": csrf})
        assert response.status_code == 303
        assert (await client.get("/admin")).status_code == 303


async def test_an_auth_none_gateway_opens_the_page_to_its_own_machine_with_a_csrf_guarded_session(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, {"x": stdio_upstream()})
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        async with browser(url.removesuffix("/mcp")) as client:
            page = await client.get("/admin")
            assert page.status_code == 200 and "local-admin" in page.text
            assert COOKIE in page.cookies
            refused = await client.post("/admin/kill-switches", data={"scope": "global", "reason": "forged"})
            assert refused.status_code == 403
            csrf = page_csrf(page.text)
            done = await client.post(
                "/admin/kill-switches", data={"csrf": csrf, "scope": "global", "reason": "from the page"}
            )
            assert done.status_code == 303
            assert len(gw.snapshots.current.policy.switches) == 1
            # Logged out, the local admin is sent back to its page, not to a token form it
            # has no token for.
            assert (await client.post("/admin/logout", data={"csrf": csrf})).status_code == 303
            form = await client.get("/admin/login")
            assert form.status_code == 303 and form.headers["location"] == "/admin"
            again = await client.get("/admin")
            assert again.status_code == 200 and "local-admin" in again.text


async def test_every_dashboard_route_serves_its_role_and_refuses_a_smaller_one(gateway: Any) -> None:
    from mcp_gateway.dashboard.pages import dashboard_routes, session_role
    from mcp_gateway.roles import Role

    base, _ = gateway
    tokens = {}
    async with admin_client(base + "/mcp") as admin:
        for role in Role:
            made = await admin.post("/admin-tokens", json={"name": f"as-{role}", "role": role.value})
            tokens[role] = made.json()["token"]
    routes = [
        (method, route.path, session_role(route.endpoint))
        for route in dashboard_routes()
        if isinstance(route, Route)
        for method in sorted((route.methods or set()) - {"HEAD"})
    ]
    assert {path for _, path, role in routes if role is None} == {"/admin/login"}
    for role, token in tokens.items():
        async with logged_in(base, token) as (client, csrf):
            for method, path, needed in routes:
                if needed is None or path == "/admin/logout":
                    continue
                concrete = path.replace("{name}", "audit").replace("{id}", "no-such-id")
                data = {"csrf": csrf, "scope": "global", "reason": "walk"} if method == "POST" else None
                response = await client.request(method, concrete, data=data)
                where = (method, path, role.value, response.status_code)
                if role.allows(needed):
                    assert response.status_code not in (401, 403), where
                else:
                    assert response.status_code == 403, where
            # What the walk engaged as an operator, release for the next role.
            async with admin_client(base + "/mcp") as admin:
                for switch in (await admin.get("/kill-switches")).json()["items"]:
                    await admin.post(f"/kill-switches/{switch['id']}/release", json={"reason": "walked"})


async def test_a_copy_of_the_cookie_opens_nothing_once_its_session_logged_out(gateway: Any) -> None:
    base, _ = gateway
    async with logged_in(base) as (client, csrf), browser(base) as thief:
        thief.cookies.set(COOKIE, client.cookies[COOKIE], path="/admin")
        assert (await thief.get("/admin")).status_code == 200
        assert (await client.post("/admin/logout", data={"csrf": csrf})).status_code == 303
        assert (await thief.get("/admin")).status_code == 303
        assert (await thief.get("/admin/part/audit")).status_code == 401


async def test_the_store_holds_no_usable_token_for_a_dashboard_session(gateway: Any) -> None:
    """Reading the store (its seal key included) yields neither the token nor the session id."""
    from sqlalchemy import select

    from mcp_gateway.store.tables import dashboard_sessions

    base, gw = gateway
    async with logged_in(base) as (client, _):
        session_id, key = client.cookies[COOKIE].split(".")
        async with gw.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(select(dashboard_sessions))]
    assert len(rows) == 1
    stored = repr(rows[0])
    assert ADMIN_TOKEN not in stored and session_id not in stored and key not in stored
    assert rows[0]["sealed"]


async def test_an_unreachable_store_gives_the_dashboard_a_503_page_not_a_traceback(gateway: Any) -> None:
    from mcp_gateway.store import open_engine

    base, gw = gateway
    async with logged_in(base) as (client, _):
        real = gw.engine
        gw.engine = open_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/test", 2.0)
        try:
            page = await client.get("/admin")
        finally:
            await gw.engine.dispose()
            gw.engine = real
        assert (await client.get("/admin")).status_code == 200  # and back once it answers
    assert page.status_code == 503
    assert "store did not answer" in page.text
