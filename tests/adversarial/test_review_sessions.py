"""An attacker's review of dashboard sessions kept in the store (migration 0007): who can
end whose session, what a store outage or partition does to every dashboard route, and
SQLite against PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from sqlalchemy import func, select, update

from mcp_gateway.dashboard.login import COOKIE
from mcp_gateway.runtime import Gateway
from mcp_gateway.store import dashboard_sessions
from mcp_gateway.store.tables import dashboard_sessions as table

from ..stores import PG_HOST, PG_PORT, postgres_database
from ..support import (
    ADMIN_TOKEN,
    TcpProxy,
    admin_client,
    dashboard_client,
    dashboard_log_in,
    page_csrf,
    recorder_upstream,
    serve,
    stdio_upstream,
    wait_ready,
    write_config,
    write_policies,
)

pytestmark = pytest.mark.anyio

POLICY = {"teams": {"ops": {"rules": [{"id": "ops-all", "allow": {"servers": ["*"]}}]}}}

BOUND = 9.0
"""A dashboard route's answer during a partition comes within a few store_timeouts (3 s):
a pooled connection's check, then a new connection, each bounded by it."""


@asynccontextmanager
async def dashboard_on(tmp_path: Path, store_url: str) -> AsyncIterator[tuple[str, Gateway]]:
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(tmp_path, {"x": stdio_upstream()}, auth="keys", policies="policies", database_url=store_url)
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url.removesuffix("/mcp"), gw


browser, log_in = dashboard_client, dashboard_log_in


async def made_token(base: str, name: str, role: str) -> str:
    async with admin_client(base + "/mcp") as admin:
        made = await admin.post("/admin-tokens", json={"name": name, "role": role})
        assert made.status_code == 201, made.text
        return str(made.json()["token"])


async def rows(gw: Gateway) -> int:
    async with gw.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_a_viewer_logging_in_again_and_again_does_not_end_an_admins_session(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap on live sessions ended the oldest, whoever's: a viewer's token (the least
    role there is) logging in past it logged every admin out, during an incident too."""
    monkeypatch.setattr(dashboard_sessions, "MAX_SESSIONS", 8)
    monkeypatch.setattr(dashboard_sessions, "MAX_OPERATOR_SESSIONS", 3)
    async with dashboard_on(tmp_path, store_url) as (base, gw), browser(base) as admin, browser(base) as viewer:
        viewer_token = await made_token(base, "watcher", "viewer")
        await log_in(admin, ADMIN_TOKEN)
        for _ in range(12):
            assert (await viewer.post("/admin/login", data={"token": viewer_token})).status_code == 303
        assert (await admin.get("/admin")).status_code == 200
        assert (await viewer.get("/admin")).status_code == 200  # its newest session is live
        assert await rows(gw) == 1 + 3  # the admin's, and the viewer's newest three


async def test_an_expired_session_opens_nothing_and_goes_with_the_next_login(tmp_path: Path, store_url: str) -> None:
    async with dashboard_on(tmp_path, store_url) as (base, gw), browser(base) as client:
        await log_in(client, ADMIN_TOKEN)
        async with gw.engine.begin() as conn:
            await conn.execute(update(table).values(expires_at=time.time() - 1))
        assert (await client.get("/admin")).status_code == 303
        assert (await client.get("/admin/part/upstreams")).status_code == 401
        async with browser(base) as other:
            await log_in(other, ADMIN_TOKEN)
        assert await rows(gw) == 1


async def test_a_revoked_token_ends_its_open_session_on_the_next_page(tmp_path: Path, store_url: str) -> None:
    async with dashboard_on(tmp_path, store_url) as (base, _), browser(base) as client:
        token = await made_token(base, "leaver", "operator")
        csrf = await log_in(client, token)
        async with admin_client(base + "/mcp") as admin:
            [made] = [t for t in (await admin.get("/admin-tokens")).json()["items"] if t["name"] == "leaver"]
            assert (await admin.delete(f"/admin-tokens/{made['id']}")).status_code == 200
        assert (await client.get("/admin")).status_code == 303
        engaged = await client.post("/admin/kill-switches", data={"csrf": csrf, "scope": "global", "reason": "late"})
        assert engaged.status_code == 303 and engaged.headers["location"] == "/admin/login"


async def test_many_logins_at_once_all_open_a_session(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent logins past the cap (each deleting expired and the oldest rows) neither
    deadlock nor fail on either store."""
    monkeypatch.setattr(dashboard_sessions, "MAX_SESSIONS", 10)
    async with dashboard_on(tmp_path, store_url) as (base, gw):
        async with browser(base) as client:
            await log_in(client, ADMIN_TOKEN)
            async with gw.engine.begin() as conn:  # expired rows for every login to delete
                await conn.execute(update(table).values(expires_at=time.time() - 1))
        statuses: list[int] = []

        async def one() -> None:
            async with browser(base) as client:
                statuses.append((await client.post("/admin/login", data={"token": ADMIN_TOKEN})).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(one)
        assert statuses == [303] * 30
        # Logins counting together may pass the cap for a moment; the next one brings it back.
        async with browser(base) as client:
            await log_in(client, ADMIN_TOKEN)
        assert await rows(gw) <= 10


@asynccontextmanager
async def behind_a_forwarder(tmp_path: Path, auth: str) -> AsyncIterator[tuple[str, Gateway, TcpProxy]]:
    async with anyio.create_task_group() as tg, postgres_database() as pg_url:
        proxy = TcpProxy(PG_HOST, PG_PORT)
        await tg.start(proxy.run)
        write_policies(tmp_path / "policies", POLICY)
        config = write_config(
            tmp_path,
            {"rec": recorder_upstream(tmp_path / "calls.log")},
            auth=auth,
            policies="policies",
            database_url=pg_url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}"),
        )
        try:
            async with serve(config) as (url, gw):
                await wait_ready(gw)
                try:
                    yield url.removesuffix("/mcp"), gw, proxy
                finally:
                    proxy.heal()
        finally:
            proxy.cut()


@pytest.mark.parametrize("auth", ["keys", "none"])
async def test_every_dashboard_route_answers_503_within_the_bound_during_a_store_partition(
    tmp_path: Path, auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hanging PostgreSQL: each route answers the 503 page within a few store_timeouts,
    logs no traceback, and the session is intact once the partition heals."""
    async with behind_a_forwarder(tmp_path, auth) as (base, _, proxy), browser(base) as client:
        if auth == "keys":
            csrf = await log_in(client, ADMIN_TOKEN)
        else:  # the local admin of an `auth: none` loopback gateway: a session of its own
            page = await client.get("/admin")
            assert page.status_code == 200
            csrf = page_csrf(page.text)
        cookie = client.cookies[COOKIE]
        proxy.black_hole()
        answers: dict[str, tuple[int, float, str]] = {}

        async def ask(name: str, method: str, path: str, data: dict[str, str] | None = None) -> None:
            async with browser(base) as other:
                if name != "cookieless":
                    other.cookies.set(COOKIE, cookie, path="/admin")
                started = time.monotonic()
                with anyio.fail_after(BOUND * 2):
                    response = await other.request(method, path, data=data)
                answers[name] = (response.status_code, time.monotonic() - started, response.text)

        caplog.clear()
        with caplog.at_level(logging.WARNING):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask, "page", "GET", "/admin")
                tg.start_soon(ask, "part", "GET", "/admin/part/upstreams")
                if auth == "keys":  # the local admin's login form is a redirect to its page
                    tg.start_soon(ask, "login form", "GET", "/admin/login")
                tg.start_soon(ask, "engage", "POST", "/admin/kill-switches", {"csrf": csrf, "scope": "global"})
                tg.start_soon(ask, "logout", "POST", "/admin/logout", {"csrf": csrf})
                if auth == "keys":
                    tg.start_soon(ask, "cookieless", "POST", "/admin/login", {"token": ADMIN_TOKEN})
                else:
                    tg.start_soon(ask, "cookieless", "GET", "/admin")
        proxy.heal()
        for name, (status, took, text) in answers.items():
            assert status == 503 and "store did not answer" in text, (name, status, text[:200])
            assert took < BOUND, (name, took)
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
        with anyio.fail_after(30):
            while (await client.get("/admin")).status_code != 200:
                await anyio.sleep(0.2)


async def test_requests_during_a_store_outage_log_a_line_a_while_not_a_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Any cookie of the right shape makes the dashboard ask the store, so during an outage
    anyone (and every open tab, six parts every two seconds) could write a WARNING per
    request: one line at once, then the count at most once a minute, as refused logins."""
    from mcp_gateway.store import open_engine

    from ..support import free_port

    async with dashboard_on(tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}") as (base, gw), browser(base) as client:
        client.cookies.set(COOKIE, "a" * 43 + "." + "b" * 43, path="/admin")
        real = gw.engine
        gw.engine = open_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/test", 2.0)
        try:
            with caplog.at_level(logging.WARNING, logger="mcp_gateway.dashboard"):
                for _ in range(20):
                    assert (await client.get("/admin/part/upstreams")).status_code == 503
        finally:
            await gw.engine.dispose()
            gw.engine = real
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("mcp_gateway.dashboard")]
    assert len(lines) == 1, lines
    assert "store did not answer" in lines[0]


async def test_a_session_opened_on_one_replica_serves_and_ends_on_another_and_nowhere_else(tmp_path: Path) -> None:
    """Two replicas on one PostgreSQL store share sessions; a gateway on another store
    (its own secret and rows) finds nothing in the same cookie."""
    write_policies(tmp_path / "policies", POLICY)
    async with postgres_database() as shared, postgres_database() as elsewhere:
        configs = []
        for name, url in (("a", shared), ("b", shared), ("c", elsewhere)):
            (tmp_path / name).mkdir()
            write_policies(tmp_path / name / "policies", POLICY)
            configs.append(
                write_config(
                    tmp_path / name, {"x": stdio_upstream()}, auth="keys", policies="policies", database_url=url
                )
            )
        async with serve(configs[0]) as (a, _), serve(configs[1]) as (b, _), serve(configs[2]) as (c, _):
            a, b, c = (u.removesuffix("/mcp") for u in (a, b, c))
            async with browser(a) as on_a, browser(b) as on_b, browser(c) as on_c:
                await log_in(on_a, ADMIN_TOKEN)
                for other in (on_b, on_c):
                    other.cookies.set(COOKIE, on_a.cookies[COOKIE], path="/admin")
                assert (await on_c.get("/admin")).status_code == 303
                page = await on_b.get("/admin")
                assert page.status_code == 200
                assert (await on_b.post("/admin/logout", data={"csrf": page_csrf(page.text)})).status_code == 303
                assert (await on_a.get("/admin")).status_code == 303


async def test_a_logout_another_page_sends_ends_no_session(tmp_path: Path, store_url: str) -> None:
    """Without the page's CSRF token (a page on another loopback port is same-site: the
    cookie goes with it), or from another origin, a logout is refused and the session lives."""
    async with dashboard_on(tmp_path, store_url) as (base, gw), browser(base) as client:
        csrf = await log_in(client, ADMIN_TOKEN)
        assert (await client.post("/admin/logout", data={"csrf": "forged"})).status_code == 403
        assert (await client.post("/admin/logout")).status_code == 403
        elsewhere = await client.post("/admin/logout", data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
        assert elsewhere.status_code == 403 and "set-cookie" not in elsewhere.headers
        assert (await client.get("/admin")).status_code == 200
        assert await rows(gw) == 1


async def test_many_open_dashboard_tabs_during_a_partition_are_each_answered_within_the_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each tab asks for six parts every two seconds, and now each of those asks the store
    who is asking: eight tabs (48 requests at once) are more than the pool's 30 connections.
    Every request must still answer its 503 within the bound, not wait for a free connection."""
    async with behind_a_forwarder(tmp_path, "keys") as (base, _, proxy), browser(base) as client:
        await log_in(client, ADMIN_TOKEN)
        cookie = client.cookies[COOKIE]
        proxy.black_hole()
        took: list[tuple[int, float]] = []

        async def part(name: str) -> None:
            async with browser(base) as tab:
                tab.cookies.set(COOKIE, cookie, path="/admin")
                started = time.monotonic()
                with anyio.fail_after(60):
                    response = await tab.get(f"/admin/part/{name}")
                took.append((response.status_code, time.monotonic() - started))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                for name in ("upstreams", "inflight", "switches", "audit", "policy", "identity"):
                    tg.start_soon(part, name)
        proxy.heal()
        with anyio.fail_after(30):  # and the pool is whole again once the store answers
            while (await client.get("/admin")).status_code != 200:
                await anyio.sleep(0.2)
    assert {status for status, _ in took} == {503}
    # Cut at three store_timeouts (9 s); 48 clients on a busy machine take a little longer
    # to be answered, far from the 30 s and more they waited for a connection.
    assert max(seconds for _, seconds in took) < BOUND + 3, sorted(round(s, 1) for _, s in took)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


async def test_a_script_polling_the_local_admins_page_ends_no_browsers_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an `auth: none` loopback gateway each cookie-less GET /admin opens a session (its
    CSRF token needs one). The local admin is alone there (no tokens exist), so only the
    overall cap holds it: a health check polling the page does not log the browser out."""
    monkeypatch.setattr(dashboard_sessions, "MAX_OPERATOR_SESSIONS", 3)
    monkeypatch.setattr(dashboard_sessions, "MAX_SESSIONS", 20)
    config = write_config(tmp_path, {"x": stdio_upstream()})
    async with serve(config) as (url, gw), browser(url.removesuffix("/mcp")) as tab:
        base = url.removesuffix("/mcp")
        assert (await tab.get("/admin")).status_code == 200
        for _ in range(10):
            async with browser(base) as probe:
                assert (await probe.get("/admin")).status_code == 200
        assert (await tab.get("/admin/part/upstreams")).status_code == 200
        for _ in range(20):
            async with browser(base) as probe:
                await probe.get("/admin")
        assert await rows(gw) == 20


async def test_reading_the_store_gives_no_sessions_csrf_token(tmp_path: Path, store_url: str) -> None:
    """With the CSRF tokens (and now whose each is), a store reader could have a page that
    the browser counts as the same site (another loopback port) post an operator's forms:
    the token must come from the cookie's key, as the sealed token does, not the row."""
    async with dashboard_on(tmp_path, store_url) as (base, gw), browser(base) as client:
        csrf = await log_in(client, ADMIN_TOKEN)
        async with gw.engine.connect() as conn:
            stored = [dict(r._mapping) for r in await conn.execute(select(table))]
        assert len(stored) == 1 and csrf not in repr(stored)
        form = {"csrf": csrf, "scope": "server", "server": "x", "reason": "still acts"}
        assert (await client.post("/admin/kill-switches", data=form)).status_code == 303
