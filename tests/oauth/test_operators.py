"""Operators with the identity provider's access tokens on the admin API: the role comes from
the token's `roles` claim, and each request needs its least role (a viewer reads, an
operator engages kill switches)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.store.audit import Filters, query

from ..support import admin_client, agent, create_key, page_csrf, raw_client, wait_ready
from .common import oauth_gateway
from .provider import Provider

pytestmark = pytest.mark.anyio

SWITCH = {"scope": "team", "team": "sales", "reason": "incident 42"}


async def test_a_viewer_token_is_refused_a_kill_switch_and_an_operator_token_engages_it(
    tmp_path: Path, provider: Provider
) -> None:
    roles = {role: role for role in ("viewer", "operator", "admin")}
    async with oauth_gateway(tmp_path, provider, auth="keys+oauth", roles=roles) as (url, gw):
        viewer = await provider.token("ops-viewer", url, scope="admin")
        operator = await provider.token("ops-operator", url, scope="admin")
        no_role = await provider.token("agent-platform", url)
        elsewhere = await provider.token("ops-operator", "https://other.example.com/mcp", scope="admin")
        async with admin_client(url, viewer) as admin:
            viewer_reads = await admin.get("/kill-switches")
            viewer_engages = await admin.post("/kill-switches", json=SWITCH)
        async with admin_client(url, no_role) as admin:
            no_role_reads = await admin.get("/kill-switches")
        async with admin_client(url, elsewhere) as admin:
            elsewhere_reads = await admin.get("/kill-switches")
        async with raw_client(url) as http:
            ready_viewer = await http.get("/readyz", headers={"Authorization": f"Bearer {viewer}"})
            ready_no_role = await http.get("/readyz", headers={"Authorization": f"Bearer {no_role}"})
        async with admin_client(url, operator) as admin:
            operator_engages = await admin.post("/kill-switches", json=SWITCH)
            operator_creates_key = await admin.post("/keys", json={"team": "sales", "name": "bot"})
        rows = await query(gw.engine, Filters(kind="admin"))

    assert viewer_reads.status_code == 200
    assert "snapshot" in ready_viewer.json() and "snapshot" not in ready_no_role.json()
    assert viewer_engages.status_code == 403
    assert "viewer" in viewer_engages.json()["error"]["message"]
    assert no_role_reads.status_code == elsewhere_reads.status_code == 401
    assert operator_engages.status_code == 201, operator_engages.text
    assert operator_engages.json()["actor"] == "oidc:ops-operator"
    assert operator_creates_key.status_code == 403  # keys are an admin's
    # Newest first: the operator's engage, its refused key, and the viewer's refused engage.
    assert [(r["principal_id"], r["method"]) for r in rows] == [
        ("oidc:ops-operator", "forbidden"),
        ("oidc:ops-operator", "killswitch.engage"),
        ("oidc:ops-viewer", "forbidden"),
    ]


async def test_without_a_roles_map_no_access_token_is_an_operators(tmp_path: Path, provider: Provider) -> None:
    """An identity provider's own `admin` role means nothing here until the operator maps it."""
    async with oauth_gateway(tmp_path, provider, auth="keys+oauth") as (url, _):
        operator = await provider.token("ops-operator", url, scope="admin")
        async with admin_client(url, operator) as admin:
            assert (await admin.get("/kill-switches")).status_code == 401


async def test_with_keys_and_oauth_an_api_key_and_an_access_token_both_reach_tools(
    tmp_path: Path, provider: Provider
) -> None:
    async with oauth_gateway(tmp_path, provider, auth="keys+oauth") as (url, gw):
        await wait_ready(gw)
        key = await create_key(url, "platform", "keyed-bot")
        token = await provider.token("agent-platform", url)
        for credential in (key, token):
            async with agent(url, credential) as client:
                assert not (await client.call_tool("everything__echo", {"text": "x"})).is_error
        rows = await query(gw.engine, Filters(tool="echo", kind="decision"))

    assert {r["principal_id"] for r in rows} == {"platform/keyed-bot", "platform/agent-platform"}


async def test_an_operator_whose_access_token_is_larger_than_a_cookie_logs_in_to_the_dashboard(
    tmp_path: Path, provider: Provider
) -> None:
    """Identity providers put groups and more in access tokens; one of 6 KB cannot be a
    cookie (4 KB at most), and the session must not depend on its size."""
    import time

    roles = {"operator": "operator"}
    async with oauth_gateway(tmp_path, provider, auth="keys+oauth", roles=roles) as (url, gw):
        await wait_ready(gw)
        now = int(time.time())
        claims = {"aud": url, "sub": "ops-big", "scope": "admin", "roles": ["operator"], "iat": now, "exp": now + 600}
        token = await provider.sign({**claims, "groups": [f"group-{i:04d}" for i in range(500)]})
        assert len(token) > 6000
        async with raw_client(url.removesuffix("/mcp")) as http:
            login = await http.post("/admin/login", data={"token": token})
            assert login.status_code == 303, login.text
            page = await http.get("/admin")
            assert page.status_code == 200 and "oidc:ops-big" in page.text
            engaged = await http.post(
                "/admin/kill-switches", data={"csrf": page_csrf(page.text), "scope": "global", "reason": "big token"}
            )
            assert engaged.status_code == 303
    assert len(gw.snapshots.current.policy.switches) == 1
    assert max(len(c) for c in login.headers.get_list("set-cookie")) < 400
