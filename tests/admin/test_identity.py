"""Teams, principals and API keys through the admin API, on both stores: created and listed,
a key's secret shown once and never again, revocation that holds at once, and precise
answers (404, 409, 400 naming the field) to what cannot be done."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from ..support import admin_client, agent, raw_client, serve, write_config
from .common import audit_rows

pytestmark = pytest.mark.anyio

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


@pytest.fixture
async def gateway(tmp_path: Path, store_url: str) -> AsyncIterator[str]:
    config = write_config(tmp_path, {}, auth="keys", policies=None, database_url=store_url)
    async with serve(config) as (url, _):
        yield url


async def _authenticates(url: str, key: str) -> bool:
    """Whether /mcp takes `key`: a request with a bad key gets 401 before anything else is
    looked at (this one, sessionless, gets 400 once past authentication)."""
    async with raw_client(url) as http:
        response = await http.post("/mcp", json=PING, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code in (400, 401), response.text
    return response.status_code != 401


async def test_teams_are_created_and_listed_and_a_second_create_conflicts(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        created = await admin.post("/teams", json={"id": "platform", "description": "Platform agents"})
        await admin.post("/teams", json={"id": "data"})
        again = await admin.post("/teams", json={"id": "platform", "description": "another"})
        listed = (await admin.get("/teams")).json()["items"]
    assert created.status_code == 201 and created.json() == {"id": "platform", "description": "Platform agents"}
    assert again.status_code == 409 and again.json()["error"]["code"] == "exists"
    assert "platform" in again.json()["error"]["message"]
    assert [(t["id"], t["description"]) for t in listed] == [("data", ""), ("platform", "Platform agents")]


async def test_principals_are_created_with_their_team_and_listed_by_team(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        bot = await admin.post("/principals", json={"team": "platform", "name": "ci-bot"})
        alice = await admin.post(
            "/principals", json={"team": "platform", "name": "alice@example.com", "kind": "person"}
        )
        await admin.post("/principals", json={"team": "data", "name": "etl"})
        platform = (await admin.get("/principals", params={"team": "platform"})).json()["items"]
        everyone = (await admin.get("/principals")).json()["items"]
        teams = [t["id"] for t in (await admin.get("/teams")).json()["items"]]
    assert bot.status_code == alice.status_code == 201
    assert bot.json()["id"] == "platform/ci-bot" and alice.json()["kind"] == "person"
    assert [(p["id"], p["team_id"], p["kind"]) for p in platform] == [
        ("platform/alice@example.com", "platform", "person"),
        ("platform/ci-bot", "platform", "agent"),
    ]
    assert [p["id"] for p in everyone] == ["data/etl", "platform/alice@example.com", "platform/ci-bot"]
    assert teams == ["data", "platform"]


async def test_a_key_is_shown_once_and_never_listed(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        created = await admin.post("/keys", json={"team": "platform", "name": "ci-bot"})
        assert created.status_code == 201, created.text
        key = created.json()
        listings = [
            await admin.get("/keys"),
            await admin.get("/keys", params={"principal": "platform/ci-bot"}),
            await admin.get("/principals"),
            await admin.get("/teams"),
            await admin.get("/audit"),
            await admin.get("/status"),
        ]
    secret = key["key"]
    assert key["principal"] == "platform/ci-bot" and key["team"] == "platform"
    assert secret.startswith(f"mgw_{key['id']}_") and len(secret) > 40
    assert await _authenticates(gateway, secret)
    listed = listings[1].json()["items"]
    assert [(k["id"], k["principal_id"], k["revoked_at"]) for k in listed] == [(key["id"], "platform/ci-bot", None)]
    for response in listings:
        assert response.status_code == 200
        assert secret not in response.text, response.request.url
        assert secret.split("_", 2)[2] not in response.text, response.request.url
        assert hashlib.sha256(secret.encode()).hexdigest() not in response.text, response.request.url


async def test_revoking_a_key_refuses_it_at_once_and_only_it(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        doomed = (await admin.post("/keys", json={"team": "platform", "name": "ci-bot"})).json()
        kept = (await admin.post("/keys", json={"team": "platform", "name": "ci-bot"})).json()
        async with agent(gateway, doomed["key"]) as client:
            await client.list_tools()
            revoked = await admin.delete(f"/keys/{doomed['id']}")
            # No wait: the next request with the revoked key, even on an open session, is refused.
            async with raw_client(gateway) as http:
                refused = await http.post("/mcp", json=PING, headers={"Authorization": f"Bearer {doomed['key']}"})
        again = await admin.delete(f"/keys/{doomed['id']}")
        listed = {k["id"]: k for k in (await admin.get("/keys")).json()["items"]}
    assert revoked.status_code == 200 and revoked.json() == {"id": doomed["id"], "revoked": True}
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert await _authenticates(gateway, kept["key"]), "the principal's other key still works"
    assert again.status_code == 404
    assert listed[doomed["id"]]["revoked_at"] is not None and listed[kept["id"]]["revoked_at"] is None


async def test_an_open_session_is_refused_once_its_key_is_revoked(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        key = (await admin.post("/keys", json={"team": "platform", "name": "ci-bot"})).json()
        async with agent(gateway, key["key"]) as client:
            await client.list_tools()
            assert (await admin.delete(f"/keys/{key['id']}")).status_code == 200
            with pytest.raises(MCPError) as refused:
                await client.list_tools()
    assert refused.value.error.message == "Unauthorized: the API key is not valid"


async def test_an_unknown_key_id_is_not_found(gateway: str) -> None:
    async with admin_client(gateway) as admin:
        response = await admin.delete("/keys/0123456789ab")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found" and "0123456789ab" in response.json()["error"]["message"]


INVALID: list[tuple[str, Any, str]] = [
    ("/teams", {"id": "Not A Team"}, "id"),
    ("/teams", {"description": "no id"}, "id"),
    ("/teams", {"id": "alpha", "colour": "red"}, "colour"),
    ("/principals", {"team": "alpha", "name": "bot", "kind": "robot"}, "kind"),
    ("/principals", {"team": "alpha", "name": "has space"}, "name"),
    ("/keys", {"team": "alpha"}, "name"),
    ("/keys", {"team": "Alpha!", "name": "bot"}, "team"),
    ("/keys", [{"team": "alpha", "name": "bot"}], "body"),
    ("/keys", "not json at all", "body"),
    ("/rules", {"id": "r", "team": "alpha", "effect": "allow", "servers": []}, "servers"),
    ("/rules", {"id": "r", "team": "alpha", "effect": "maybe", "servers": ["x"]}, "effect"),
    ("/kill-switches", {"scope": "team", "reason": "drill"}, "team"),
    ("/kill-switches", {"scope": "global", "reason": ""}, "reason"),
    ("/kill-switches", {"scope": "global", "reason": "drill", "expires_in_seconds": -1}, "expires_in_seconds"),
]


async def test_invalid_bodies_are_refused_with_400_naming_the_field(gateway: str) -> None:
    wrong: list[str] = []
    async with admin_client(gateway) as admin:
        for path, body, field in INVALID:
            if isinstance(body, str):
                response = await admin.post(path, content=body, headers={"content-type": "application/json"})
            else:
                response = await admin.post(path, json=body)
            error = (
                response.json().get("error", {}) if response.headers.get("content-type") == "application/json" else {}
            )
            if (
                response.status_code != 400
                or error.get("code") != "invalid_request"
                or field not in error.get("message", "")
            ):
                wrong.append(f"POST {path} {body!r}: {response.status_code} {response.text}")
        nothing = await admin.get("/teams"), await admin.get("/keys"), await admin.get("/kill-switches")
        admin_rows = await audit_rows(admin, kind="admin")
    assert not wrong, "\n".join(wrong)
    assert all(r.json()["items"] == [] for r in nothing), "an invalid request changed nothing"
    assert admin_rows == [], "an invalid request is not an action"


async def test_the_longest_principal_name_the_api_accepts_gets_a_working_key(gateway: str) -> None:
    """The body models allow a 64-character team and a 128-character name; the store must
    hold what the API accepts (or the API must refuse it as invalid, never fail with 500)."""
    team, name = "t" * 64, "n" * 128
    async with admin_client(gateway) as admin:
        response = await admin.post("/keys", json={"team": team, "name": name})
    assert response.status_code in (201, 400), f"{response.status_code}: {response.text}"
    if response.status_code == 201:
        assert await _authenticates(gateway, response.json()["key"])
    else:
        assert "name" in response.json()["error"]["message"]
