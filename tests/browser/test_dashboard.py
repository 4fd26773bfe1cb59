"""The operator dashboard in a real browser against a real gateway: log in with an admin
token, watch a slow call in flight, stop it with a server kill switch from the page, see
it end and the switch listed, release it, and find both actions in the audit view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.errors import GATEWAY_DENIED

from ..support import (
    ADMIN_TOKEN,
    admin_client,
    agent,
    create_key,
    serve,
    stdio_upstream,
    wait_ready,
    write_config,
    write_policies,
)
from .conftest import screenshot

pytestmark = pytest.mark.anyio

POLICY = {"teams": {"ops": {"rules": [{"id": "ops-all", "allow": {"servers": ["*"]}}]}}}


@pytest.fixture
async def gateway(tmp_path: Path):  # type: ignore[no-untyped-def]
    write_policies(tmp_path / "policies", POLICY)
    config = write_config(tmp_path, {"x": stdio_upstream(), "y": stdio_upstream()}, auth="keys", policies="policies")
    async with serve(config) as (url, gw):
        await wait_ready(gw)
        yield url, gw


async def _log_in(browser: Any, base: str, token: str) -> Any:
    page = await browser.new_page()
    await page.goto(f"{base}/admin")
    assert page.url.endswith("/admin/login")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/admin")
    return page


async def test_an_operator_stops_a_slow_call_from_the_dashboard_and_finds_it_audited(
    gateway: Any, browser: Any
) -> None:
    url, _ = gateway
    base = url.removesuffix("/mcp")
    key = await create_key(url, "ops", "agent")
    outcome: list[Any] = []

    async def slow_call() -> None:
        async with agent(url, key) as client:
            try:
                await client.call_tool("x__slow", {"seconds": 60})
                outcome.append("finished")
            except MCPError as exc:
                outcome.append(exc.error)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_call)
        page = await _log_in(browser, base, ADMIN_TOKEN)
        # The in-flight part refreshes itself: the call appears without reloading the page.
        flights = page.locator("[data-part=inflight] td.name", has_text="slow")
        await flights.first.wait_for(timeout=15_000)
        await screenshot(page, "dashboard-in-flight")

        await page.select_option("#engage-scope", "server")
        await page.fill("#engage-server", "x")
        await page.fill("#engage-reason", "stopped from the dashboard in a test")
        await page.click("#engage")
        await page.wait_for_url(f"{base}/admin")
        row = page.locator("[data-part=switches] tr", has_text="stopped from the dashboard in a test")
        await row.wait_for(timeout=10_000)
        assert await row.locator("td.target").inner_text() == "x"
        with anyio.fail_after(15):
            while not outcome:
                await anyio.sleep(0.05)
        await page.locator("[data-part=inflight]", has_text="No call in flight.").wait_for(timeout=10_000)
        await screenshot(page, "dashboard-switch-engaged")

        await row.locator("button.release").click()
        await page.wait_for_url(f"{base}/admin")
        await page.locator("[data-part=switches]", has_text="No kill switch is engaged.").wait_for(timeout=10_000)

    assert outcome[0].code == GATEWAY_DENIED and "kill switch" in outcome[0].message
    await page.goto(f"{base}/admin?kind=admin")
    audit = page.locator("[data-part=audit] tbody tr")
    methods = [await audit.nth(i).locator("td").nth(4).inner_text() for i in range(await audit.count())]
    assert methods[:2] == ["killswitch.release", "killswitch.engage"]
    actors = {await audit.nth(i).locator("td").nth(3).inner_text() for i in range(2)}
    assert actors == {"admin-token"}
    await page.goto(f"{base}/admin?tool=slow&kind=completion")
    outcomes = page.locator("[data-part=audit] td.outcome")
    assert await outcomes.first.inner_text() == "killed"
    await screenshot(page, "dashboard-audit")


async def _token(url: str, role: str) -> tuple[str, str]:
    async with admin_client(url) as admin:
        response = await admin.post("/admin-tokens", json={"name": f"{role}-on-call", "role": role})
        assert response.status_code == 201, response.text
        made = response.json()
        return str(made["id"]), str(made["token"])


async def test_a_viewer_sees_no_action_and_is_refused_and_audited_if_it_posts_anyway(
    gateway: Any, browser: Any
) -> None:
    url, gw = gateway
    base = url.removesuffix("/mcp")
    _, token = await _token(url, "viewer")
    async with admin_client(url) as admin:
        engaged = await admin.post("/kill-switches", json={"scope": "server", "server": "y", "reason": "already on"})
        assert engaged.status_code == 201
    page = await _log_in(browser, base, token)
    assert await page.locator("#role").inner_text() == "viewer"
    await page.locator("[data-part=switches] tr", has_text="already on").wait_for()
    assert await page.locator("#engage").count() == 0
    assert await page.locator("button.release").count() == 0
    assert await page.locator("#reload").count() == 0
    await screenshot(page, "dashboard-viewer")
    # The same form another page could build, with this session's own CSRF token.
    status = await page.evaluate(
        """async () => {
            const csrf = document.querySelector("input[name=csrf]").value;
            const body = new URLSearchParams({csrf, scope: "global", reason: "a viewer tries"});
            const response = await fetch("/admin/kill-switches", {method: "POST", body});
            return response.status;
        }"""
    )
    assert status == 403
    assert [s.scope for s in gw.snapshots.current.policy.switches] == ["server"]
    async with admin_client(url) as admin:
        rows = (await admin.get("/audit", params={"kind": "admin"})).json()["items"]
    refused = [r for r in rows if r["method"] == "forbidden"]
    assert refused and refused[0]["principal_id"] == "viewer-on-call"
    assert "engage kill switches needs operator" in refused[0]["detail"]


async def test_revoking_an_admin_token_ends_its_dashboard_session_at_once(gateway: Any, browser: Any) -> None:
    url, _ = gateway
    base = url.removesuffix("/mcp")
    token_id, token = await _token(url, "operator")
    page = await _log_in(browser, base, token)
    assert await page.locator("#role").inner_text() == "operator"
    async with admin_client(url) as admin:
        assert (await admin.delete(f"/admin-tokens/{token_id}")).status_code == 200
    # The page's next refresh finds the session gone and goes to the login form.
    await page.wait_for_url(f"{base}/admin/login", timeout=10_000)
