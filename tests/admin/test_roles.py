"""Admin tokens carry a role (viewer, operator, admin) and every admin route names the least
role it needs: a smaller role gets 403 `forbidden`, naming the role needed and the role
held. Tokens can be listed and revoked, through the admin API and the CLI; a revoked token
gets 401 on this replica and every other one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from starlette.routing import Mount, Route

from mcp_gateway.admin.common import admin, required_role
from mcp_gateway.app import create_app
from mcp_gateway.config import load
from mcp_gateway.dashboard.pages import session_role
from mcp_gateway.roles import Role
from mcp_gateway.settings import settings_for

from ..support import admin_client, http_server, raw_client, serve, serving, write_config
from .common import audit_rows, mcp_gateway

pytestmark = pytest.mark.anyio

ENGAGE = {"scope": "team", "team": "ghost", "reason": "drill"}
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/admin/api/openapi.json"),
    ("GET", "/admin/login"),
    ("POST", "/admin/login"),
}
"""The routes open without a token, deliberately: probes, the API's own description, and
the dashboard's login form. (The dashboard's other routes name their role with
`session_role`: they take a session cookie, not a bearer token; tests/admin/test_dashboard.py
walks them.)"""


async def make_token(url: str, name: str, role: str) -> dict[str, Any]:
    """A token made through the admin API with the configured (admin) token."""
    async with admin_client(url) as admin:
        response = await admin.post("/admin-tokens", json={"name": name, "role": role})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
async def gateway(tmp_path: Path, store_url: str) -> AsyncIterator[str]:
    """A gateway with API keys, the configured admin token, and no policy directory (so the
    rule routes answer for real)."""
    config = write_config(tmp_path, {}, auth="keys", database_url=store_url, policies=None)
    async with serve(config) as (url, _):
        yield url


async def test_a_viewer_token_gets_403_naming_both_roles_on_engaging_a_kill_switch(gateway: str) -> None:
    viewer = await make_token(gateway, "dashboard", "viewer")
    async with admin_client(gateway, viewer["token"]) as admin:
        refused = await admin.post("/kill-switches", json=ENGAGE)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["required_role"], error["role"]) == ("forbidden", "operator", "viewer")
    assert "operator" in error["message"] and "viewer" in error["message"]
    async with admin_client(gateway) as admin:
        assert (await admin.get("/kill-switches")).json()["items"] == [], "nothing was engaged"
        rows = await audit_rows(admin, kind="admin")
    assert [(r["principal_id"], r["method"], r["decision"], r["reason"], r["detail"]) for r in rows] == [
        ("dashboard", "forbidden", "deny", "role viewer", "engage needs operator"),
        ("admin-token", "admin_token.create", "allow", "role admin", "dashboard (viewer)"),
    ], "the refusal is audited, and nothing else was done"


async def test_an_operator_token_engages_and_releases_a_kill_switch_recorded_with_its_name_and_role(
    gateway: str,
) -> None:
    operator = await make_token(gateway, "oncall", "operator")
    async with admin_client(gateway, operator["token"]) as admin:
        engaged = await admin.post("/kill-switches", json=ENGAGE)
        assert engaged.status_code == 201, engaged.text
        released = await admin.post(f"/kill-switches/{engaged.json()['id']}/release", json={"reason": "over"})
        assert released.status_code == 200, released.text
    assert engaged.json()["actor"] == "oncall"
    async with admin_client(gateway) as admin:
        rows = await audit_rows(admin, kind="admin")
    assert [(r["principal_id"], r["method"], r["reason"]) for r in reversed(rows)] == [
        ("admin-token", "admin_token.create", "role admin"),
        ("oncall", "killswitch.engage", "role operator"),
        ("oncall", "killswitch.release", "role operator"),
    ]


async def test_a_viewer_reads_everything_a_viewer_may_read(gateway: str) -> None:
    viewer = await make_token(gateway, "dashboard", "viewer")
    async with admin_client(gateway, viewer["token"]) as admin:
        for path in ("/status", "/kill-switches", "/audit", "/teams", "/principals", "/keys", "/rules", "/policy"):
            response = await admin.get(path)
            assert response.status_code == 200, (path, response.text)


async def test_an_operator_cannot_create_keys_or_tokens_or_revoke_them(gateway: str) -> None:
    operator = await make_token(gateway, "oncall", "operator")
    async with admin_client(gateway, operator["token"]) as admin:
        attempts = [
            await admin.post("/keys", json={"team": "alpha", "name": "bot"}),
            await admin.post("/admin-tokens", json={"name": "escalated", "role": "admin"}),
            await admin.get("/admin-tokens"),
            await admin.delete(f"/admin-tokens/{operator['id']}"),
        ]
    for response in attempts:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["required_role"] == "admin"
    async with admin_client(gateway) as admin:
        assert (await admin.get("/keys")).json()["items"] == []
        names = [t["name"] for t in (await admin.get("/admin-tokens")).json()["items"]]
    assert names == ["oncall"]


async def test_tokens_are_listed_with_their_role_and_a_revoked_one_gets_401(gateway: str) -> None:
    viewer = await make_token(gateway, "dashboard", "viewer")
    operator = await make_token(gateway, "oncall", "operator")
    assert set(operator) == {"id", "name", "role", "created_at", "revoked_at", "last_used_at", "token"}
    async with admin_client(gateway, operator["token"]) as admin:
        assert (await admin.get("/status")).status_code == 200
    async with admin_client(gateway) as admin:
        revoked = await admin.delete(f"/admin-tokens/{operator['id']}")
        assert revoked.status_code == 200, revoked.text
        again = await admin.delete(f"/admin-tokens/{operator['id']}")
        assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
        listed = (await admin.get("/admin-tokens")).json()["items"]
        rows = [r for r in await audit_rows(admin, kind="admin") if r["method"] == "admin_token.revoke"]
    async with admin_client(gateway, operator["token"]) as admin:
        refused = await admin.get("/status")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert [(t["name"], t["role"], t["revoked_at"] is not None) for t in listed] == [
        ("dashboard", "viewer", False),
        ("oncall", "operator", True),
    ]
    assert all("token" not in t and "hash" not in t for t in listed), "secrets and digests are never listed"
    assert viewer["id"] != operator["id"]
    assert {r["detail"] for r in rows} == {operator["id"]}


async def test_a_tokens_last_use_is_listed(gateway: str) -> None:
    viewer = await make_token(gateway, "dashboard", "viewer")
    unused = await make_token(gateway, "spare", "viewer")
    async with admin_client(gateway, viewer["token"]) as as_viewer:
        assert (await as_viewer.get("/status")).status_code == 200
    async with admin_client(gateway) as admin:
        with anyio.fail_after(15):  # written in the background, not awaited by the request
            while True:
                listed = {t["id"]: t for t in (await admin.get("/admin-tokens")).json()["items"]}
                if listed[viewer["id"]]["last_used_at"] is not None:
                    break
                await anyio.sleep(0.05)
    assert listed[viewer["id"]]["last_used_at"] >= viewer["created_at"]
    assert listed[unused["id"]]["last_used_at"] is None


async def test_readyz_details_go_to_any_role_and_not_to_a_revoked_token(gateway: str) -> None:
    viewer = await make_token(gateway, "probe", "viewer")
    async with raw_client(gateway) as http:
        auth = {"Authorization": f"Bearer {viewer['token']}"}
        assert "snapshot" in (await http.get("/readyz", headers=auth)).json()
        async with admin_client(gateway) as admin:
            assert (await admin.delete(f"/admin-tokens/{viewer['id']}")).status_code == 200
        assert "snapshot" not in (await http.get("/readyz", headers=auth)).json()


async def test_a_revoked_token_is_refused_on_the_other_replica_too(tmp_path: Path, store_url: str) -> None:
    """Two gateways on one store: a token revoked through one is refused by the other, which
    learns it the way it learns a revoked key (PostgreSQL NOTIFY, or polling the version)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_config(tmp_path / "a", {}, auth="keys", database_url=store_url, policies=None)
    second = write_config(tmp_path / "b", {}, auth="keys", database_url=store_url, policies=None)
    async with serve(first) as (url_a, _), serve(second) as (url_b, _):
        operator = await make_token(url_a, "oncall", "operator")
        async with admin_client(url_b, operator["token"]) as on_b:
            await _until(on_b, 200)
            async with admin_client(url_a) as on_a:
                assert (await on_a.delete(f"/admin-tokens/{operator['id']}")).status_code == 200
            await _until(on_b, 401)


async def _until(admin: httpx2.AsyncClient, status: int) -> None:
    with anyio.fail_after(20):
        while (await admin.get("/status")).status_code != status:
            await anyio.sleep(0.05)


# -- every route names its role, and the role is enforced ------------------------------------


def _routes(app: Any) -> list[tuple[str, str, Any]]:
    """(method, path, endpoint) of every HTTP route the app's router serves."""
    found = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                    found.append((method, prefix + route.path, route.endpoint))
            else:
                raise AssertionError(f"a route of an unexpected kind: {route!r}")

    walk(app.starlette.routes, "")
    return found


async def test_every_route_of_the_app_names_a_role_and_each_smaller_role_gets_403(tmp_path: Path) -> None:
    """Walks the app's own router, so a route added without `@admin(Role.X)` fails here
    (unless it is one of the deliberately public ones)."""
    config_path = write_config(tmp_path, {}, auth="keys", policies=None)
    config = load(config_path)
    settings = settings_for(config)
    app = create_app(config, settings)
    routes = _routes(app)
    assert len(routes) > 20
    undeclared = [
        (m, p)
        for m, p, endpoint in routes
        if required_role(endpoint) is None and session_role(endpoint) is None and (m, p) not in PUBLIC
    ]
    assert undeclared == [], "every admin route names its least role with @admin(Role.X)"
    async with serving(app, http_server.ConnectionLimits.of(settings)) as port:
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/mcp"
        tokens = {role: (await make_token(url, f"as-{role}", role.value))["token"] for role in Role}
        async with httpx2.AsyncClient(base_url=base, timeout=30) as http:
            for method, path, endpoint in routes:
                needed = required_role(endpoint)
                if needed is None:
                    continue
                concrete = re.sub(r"\{[^}]+\}", "no-such-id", path)
                for role, token in tokens.items():
                    response = await http.request(
                        method, concrete, json={}, headers={"Authorization": f"Bearer {token}"}
                    )
                    where = (method, path, role.value, response.status_code, response.text[:200])
                    if role.allows(needed):
                        assert response.status_code not in (401, 403), where
                    else:
                        assert response.status_code == 403, where
                        error = response.json()["error"]
                        assert (error["code"], error["required_role"], error["role"]) == (
                            "forbidden",
                            needed.value,
                            role.value,
                        ), where


async def test_the_openapi_document_names_each_operations_role_as_the_route_enforces_it(gateway: str) -> None:
    async with admin_client(gateway, None) as anonymous:
        document = (await anonymous.get("/openapi.json")).json()
    from mcp_gateway.admin.routes import ROUTES

    for method, path, handler, _, _ in ROUTES:
        operation = document["paths"][f"/admin/api{path}"][method.lower()]
        assert operation["x-required-role"] == required_role(handler), (method, path)
        assert operation["x-required-role"] in operation["description"]
        assert "403" in operation["responses"]
    assert "viewer" in document["components"]["securitySchemes"]["adminToken"]["description"]
    kill = document["paths"]["/admin/api/kill-switches"]
    tokens = document["paths"]["/admin/api/admin-tokens"]
    assert (kill["get"]["x-required-role"], kill["post"]["x-required-role"]) == ("viewer", "operator")
    assert (tokens["get"]["x-required-role"], tokens["post"]["x-required-role"]) == ("admin", "admin")


def test_an_admin_route_cannot_be_declared_without_a_role() -> None:
    async def handler(request: Any, actor: str) -> Any:
        raise AssertionError("never run")

    with pytest.raises(TypeError, match="names the least role"):
        admin(handler)  # type: ignore[arg-type]


# -- the CLI ------------------------------------------------------------------------------------


async def test_the_cli_creates_lists_and_revokes_tokens_with_roles(tmp_path: Path, store_url: str) -> None:
    config = write_config(tmp_path, {}, auth="keys", database_url=store_url, admin_token=None, policies=None)
    made = await mcp_gateway("admin-token", "create", "--name", "oncall", "--role", "operator", "--config", str(config))
    assert made.returncode == 0, made.stderr.decode()
    assert "role operator" in made.stderr.decode() and "note:" not in made.stderr.decode()
    operator = made.stdout.decode().strip()
    legacy = await mcp_gateway("admin-token", "create", "--name", "ops", "--config", str(config))
    assert legacy.returncode == 0, legacy.stderr.decode()
    assert "no --role given" in legacy.stderr.decode() and "role admin" in legacy.stderr.decode()
    admin_secret = legacy.stdout.decode().strip()

    async with serve(config) as (url, _):
        async with admin_client(url, operator) as as_operator:
            assert (await as_operator.post("/kill-switches", json=ENGAGE)).status_code == 201
            assert (await as_operator.post("/keys", json={"team": "a", "name": "b"})).status_code == 403
        async with admin_client(url, admin_secret) as as_admin:
            assert (await as_admin.post("/keys", json={"team": "a", "name": "b"})).status_code == 201
            with anyio.fail_after(15):  # last uses are written in the background
                while any(t["last_used_at"] is None for t in (await as_admin.get("/admin-tokens")).json()["items"]):
                    await anyio.sleep(0.05)

        listed = await mcp_gateway("admin-token", "list", "--config", str(config))
        assert listed.returncode == 0, listed.stderr.decode()
        lines = listed.stdout.decode().splitlines()
        assert [line.split()[1:3] for line in lines] == [["oncall", "operator"], ["ops", "admin"]]
        assert all(" last used 20" in line for line in lines)
        assert all(" created " in line and line.endswith("active") for line in lines)
        operator_id = lines[0].split()[0]

        revoked = await mcp_gateway("admin-token", "revoke", operator_id, "--config", str(config))
        assert revoked.returncode == 0, revoked.stderr.decode()
        async with admin_client(url, operator) as as_operator:
            await _until(as_operator, 401)

    again = await mcp_gateway("admin-token", "revoke", operator_id, "--config", str(config))
    assert again.returncode == 1 and again.stderr.decode().startswith("error: no active admin token")
    assert "Traceback" not in again.stderr.decode()
    listed = await mcp_gateway("admin-token", "list", "--config", str(config))
    assert " revoked " in listed.stdout.decode().splitlines()[0]


async def test_the_cli_refuses_an_unknown_role_or_a_bad_name_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, auth="keys", admin_token=None, policies=None)
    bad_role = await mcp_gateway("admin-token", "create", "--name", "x", "--role", "root", "--config", str(config))
    assert bad_role.returncode == 2 and "invalid choice: 'root'" in bad_role.stderr.decode()
    bad_name = await mcp_gateway("admin-token", "create", "--name", "a b\n", "--config", str(config))
    assert bad_name.returncode == 2, bad_name.stderr.decode()
    assert "Traceback" not in bad_name.stderr.decode() and "--name" in bad_name.stderr.decode()


# -- serving beyond loopback ----------------------------------------------------------------------


async def test_a_cli_made_token_alone_lets_the_admin_api_serve_beyond_loopback(tmp_path: Path) -> None:
    """No `admin_token` setting, a gateway configured for 0.0.0.0: it starts, and the token
    made with `admin-token create` opens its admin API (the test reaches it on loopback)."""
    config = write_config(tmp_path, {}, auth="keys", admin_token=None, policies=None)
    made = await mcp_gateway("admin-token", "create", "--name", "ops", "--role", "admin", "--config", str(config))
    assert made.returncode == 0, made.stderr.decode()
    async with serve(config, host="0.0.0.0") as (url, gw):
        assert not gw.settings.is_loopback()
        async with admin_client(url, made.stdout.decode().strip()) as admin:
            assert (await admin.get("/status")).status_code == 200
