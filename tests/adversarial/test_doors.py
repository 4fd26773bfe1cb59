"""Issue 11, break 12: doors that opened too easily.

With API keys, the admin API without an admin token refuses every request, loopback
callers included: a reverse proxy on the same host (a loopback peer, a loopback Host)
must not hand this machine's privilege to whoever can reach the proxy. `/readyz` says
ready or not to anyone; what it knows about upstreams (names, PIDs, last errors) and the
snapshot only to an admin.
"""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_gateway.admin.routes import ROUTES

from ..support import TcpProxy, serve, stdio_upstream, wait_ready, write_config
from .common import ADMIN_TOKEN, deployment

pytestmark = pytest.mark.anyio


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", path)


async def test_with_api_keys_and_no_admin_token_every_admin_route_refuses_even_loopback(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, auth="keys", admin_token=None)
    async with serve(config) as (url, _), httpx2.AsyncClient(base_url=url.rsplit("/mcp", 1)[0]) as http:
        for method, path, _, _, _ in ROUTES:
            response = await http.request(method, "/admin/api" + _concrete(path), json={})
            assert response.status_code == 401, (method, path, response.status_code, response.text[:200])
            message = response.json()["error"]["message"]
            assert "admin_token" in message and "admin-token create" in message, message
        made = await http.post("/admin/api/keys", json={"team": "alpha", "name": "bot"}, headers={"Host": "localhost"})
        assert made.status_code == 401


async def test_a_same_host_reverse_proxy_cannot_create_a_key_through_a_tokenless_admin_api(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, auth="keys", admin_token=None)
    async with serve(config) as (url, gateway):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        proxy = TcpProxy("127.0.0.1", port)
        async with anyio.create_task_group() as tg:
            await tg.start(proxy.run)
            # What nginx sends by default: `Host` is the upstream address it proxies to.
            async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{proxy.port}") as http:
                made = await http.post(
                    "/admin/api/keys",
                    json={"team": "alpha", "name": "bot"},
                    headers={"Host": f"127.0.0.1:{port}", "X-Forwarded-For": "203.0.113.9"},
                )
            proxy.cut()
            tg.cancel_scope.cancel()
    assert made.status_code == 401, made.text
    assert not gateway.snapshots.current.keys, "no key was made"


async def test_readyz_tells_anyone_only_whether_the_gateway_is_ready(tmp_path: Path) -> None:
    async with deployment(tmp_path) as running, httpx2.AsyncClient(base_url=running.base) as http:
        for headers in ({}, {"Host": "attacker.example"}, {"Authorization": "Bearer wrong"}):
            response = await http.get("/readyz", headers=headers)
            assert response.status_code == 200, headers
            assert response.json() == {"status": "ready"}, headers
        response = await http.get("/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200
        details = response.json()
        async with running.admin() as admin:
            status = (await admin.get("/status")).json()
    assert details["status"] == "ready"
    assert [u["name"] for u in details["upstreams"]] == ["x"] and "pid" in details["upstreams"][0]
    assert details["snapshot"]["version"] == status["snapshot"]["version"]
    assert [u["name"] for u in status["upstreams"]] == ["x"], "the admin API's status has the details too"


async def test_readyz_details_reach_a_loopback_caller_of_an_auth_none_gateway_but_not_a_rebound_page(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, {"x": stdio_upstream()})
    async with serve(config) as (url, gateway), httpx2.AsyncClient(base_url=url.rsplit("/mcp", 1)[0]) as http:
        await wait_ready(gateway)
        local = await http.get("/readyz")
        rebound = await http.get("/readyz", headers={"Host": "attacker.example:8080"})
    assert local.status_code == 200 and [u["name"] for u in local.json()["upstreams"]] == ["x"]
    assert rebound.status_code == 200 and rebound.json() == {"status": "ready"}
