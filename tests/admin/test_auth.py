"""Who may use the admin API. With an admin token configured (the `admin_token` setting, or
tokens made with `mcp-gateway admin-token create`) nothing else opens it; without one it
is open only in `auth: none` mode, to loopback callers; admin tokens and agent keys are
separate credentials; and the gateway will not start with an open door beyond loopback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcp_gateway.admin.routes import ROUTES
from mcp_gateway.app import check_exposure
from mcp_gateway.errors import ConfigError
from mcp_gateway.settings import Settings

from ..support import admin_client, agent, create_key, environ, raw_client, serve, write_config
from .common import audit_rows, mcp_gateway

pytestmark = pytest.mark.anyio

TOKEN = "test-admin-token-0123456789abcdef"
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", path)


@pytest.fixture
async def guarded(tmp_path: Path, store_url: str) -> AsyncIterator[str]:
    """A gateway on loopback with API keys and an admin token given as a secret reference."""
    config = write_config(tmp_path, {}, auth="keys", database_url=store_url, admin_token={"$env": "TEST_ADMIN_TOKEN"})
    with environ(TEST_ADMIN_TOKEN=TOKEN):
        async with serve(config) as (url, _):
            yield url


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN],
    ids=["none", "wrong", "longer", "basic-scheme", "no-scheme"],
)
async def test_every_admin_route_refuses_a_missing_or_wrong_token(guarded: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with admin_client(guarded, None) as admin:
        for method, path, _, _, _ in ROUTES:
            response = await admin.request(method, _concrete(path), headers=headers, json={})
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
            assert response.json()["error"]["code"] == "unauthorized", (method, path)


async def test_the_configured_token_opens_the_api_and_is_the_recorded_actor(guarded: str) -> None:
    async with admin_client(guarded, TOKEN) as admin:
        assert (await admin.get("/status")).status_code == 200
        assert (await admin.post("/teams", json={"id": "ops-made"})).status_code == 201
        rows = await audit_rows(admin, kind="admin")
    assert [(r["principal_id"], r["method"], r["detail"]) for r in rows] == [("admin-token", "team.create", "ops-made")]


async def test_the_admin_token_can_come_from_the_environment(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, auth="keys", admin_token=None)
    with environ(MCP_GATEWAY_ADMIN_TOKEN=TOKEN):
        async with serve(config) as (url, _), admin_client(url, None) as anonymous, admin_client(url, TOKEN) as admin:
            assert (await anonymous.get("/status")).status_code == 401
            assert (await admin.get("/status")).status_code == 200


async def test_without_any_admin_token_an_auth_none_gateway_opens_the_api_on_loopback_as_local_admin(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, {}, auth="none")
    async with serve(config) as (url, _), admin_client(url, None) as admin:
        assert (await admin.post("/teams", json={"id": "opened"})).status_code == 201
        rows = await audit_rows(admin, kind="admin")
    assert [r["principal_id"] for r in rows] == ["local-admin"]


async def test_the_open_loopback_api_does_not_answer_requests_for_another_host(tmp_path: Path) -> None:
    """`allowed_hosts` is how a loopback gateway is put behind a reverse proxy. A request
    that names such a host came through it, from wherever the proxy is reachable, so it is
    not a local caller and the tokenless loopback opening must not apply to it (or the
    gateway must refuse to start that way, as it does on a non-loopback address)."""
    config = write_config(tmp_path, {}, auth="none", allowed_hosts=["gateway.example.com"])
    try:
        async with serve(config) as (url, _), admin_client(url, None) as admin:
            local = await admin.get("/status")
            proxied = await admin.get("/status", headers={"Host": "gateway.example.com"})
    except ConfigError:
        return  # refusing to start this way is right too
    assert local.status_code == 200
    assert proxied.status_code == 401, proxied.text[:200]


async def test_a_cli_made_token_opens_the_api_and_records_its_name_as_actor(tmp_path: Path, store_url: str) -> None:
    config = write_config(tmp_path, {}, auth="keys", database_url=store_url, admin_token=None)
    made = await mcp_gateway("admin-token", "create", "--name", "ops", "--config", str(config))
    assert made.returncode == 0, made.stderr.decode()
    token = made.stdout.decode().strip()
    assert token.startswith("mgwa_") and "shown once" in made.stderr.decode()

    async with serve(config) as (url, _):
        async with admin_client(url, None) as anonymous:
            refused = await anonymous.get("/status")
        assert refused.status_code == 401, "loopback callers need an admin token too"
        async with admin_client(url, token) as admin:
            engaged = await admin.post("/kill-switches", json={"scope": "team", "team": "ghost", "reason": "drill"})
            assert engaged.status_code == 201, engaged.text
            switch = engaged.json()
            released = await admin.post(f"/kill-switches/{switch['id']}/release", json={"reason": "drill over"})
            assert released.status_code == 200, released.text
            rows = await audit_rows(admin, kind="admin")
    assert switch["actor"] == "ops"
    assert [(r["principal_id"], r["method"]) for r in reversed(rows)] == [
        ("ops", "killswitch.engage"),
        ("ops", "killswitch.release"),
    ]


async def test_agent_keys_and_admin_tokens_are_not_interchangeable(tmp_path: Path, store_url: str) -> None:
    config = write_config(tmp_path, {}, auth="keys", database_url=store_url, admin_token={"$env": "TEST_ADMIN_TOKEN"})
    made = await mcp_gateway(
        "admin-token", "create", "--name", "ops", "--config", str(config), env={"TEST_ADMIN_TOKEN": TOKEN}
    )
    assert made.returncode == 0, made.stderr.decode()
    cli_token = made.stdout.decode().strip()
    with environ(TEST_ADMIN_TOKEN=TOKEN):
        async with serve(config) as (url, _):
            agent_key = await create_key(url, "alpha", "bot", TOKEN)
            async with agent(url, agent_key) as client:
                assert (await client.list_tools()).tools == []  # the agent key itself works on /mcp
            async with raw_client(url) as http:
                for token in (TOKEN, cli_token):
                    on_mcp = await http.post("/mcp", json=PING, headers={"Authorization": f"Bearer {token}"})
                    assert on_mcp.status_code == 401, "an admin token is not an agent key"
                    assert on_mcp.headers["www-authenticate"].startswith("Bearer")
            async with admin_client(url, agent_key) as admin:
                on_admin = await admin.get("/status")
            assert on_admin.status_code == 401, "an agent key is not an admin token"
            assert on_admin.json()["error"]["code"] == "unauthorized"


# -- refusing to start exposed --------------------------------------------------------------


async def _serve_exposed(config: Path, host: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`mcp-gateway serve` on a non-loopback address: it must exit on its own, at once."""
    done = await mcp_gateway("serve", "--config", str(config), "--host", host, "--port", "0", env=env, timeout=30)
    return done.returncode, done.stderr.decode()


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_with_api_keys_a_tokenless_admin_api_is_closed_not_exposed_so_serving_beyond_loopback_is_allowed(
    host: str,
) -> None:
    """Without a token the admin API of an `auth: keys` gateway refuses every request
    (tests/adversarial/test_doors.py): there is no open door to refuse to start with."""
    check_exposure(Settings(auth="keys", host=host, admin_api=True))


async def test_serve_refuses_auth_none_beyond_loopback_even_with_an_admin_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, auth="none")
    code, stderr = await _serve_exposed(config, "0.0.0.0", env={"MCP_GATEWAY_ADMIN_TOKEN": TOKEN})
    assert code == 2, stderr
    assert "auth: none is only allowed on loopback" in stderr
    assert "admin API would be open" not in stderr


async def test_serve_refuses_both_exposures_together_naming_each(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, auth="none")
    code, stderr = await _serve_exposed(config, "0.0.0.0")
    assert code == 2, stderr
    assert "auth: none is only allowed on loopback" in stderr and "admin API would be open" in stderr
    assert "Traceback" not in stderr and stderr.count("error:") == 2
