"""The admin API's errors in process: a route raises `ApiError` and the app's one exception
handler answers with its status, body and headers; the `@admin` decorator's refusals (401,
403 and its audit row) and its 503s are rendered the same way; any other exception is still
Starlette's plain 500. Bodies are compared as bytes: clients and the CLI read them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcp_gateway import auth
from mcp_gateway.admin import EXCEPTION_HANDLERS
from mcp_gateway.admin.common import admin, ok
from mcp_gateway.errors import ApiError, AuditUnavailable
from mcp_gateway.policy.snapshot import AdminToken
from mcp_gateway.roles import Role

from .fakes import MemoryAudit, hotpath

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = "configured-admin-token"
VIEWER_ID = "0123456789ab"
VIEWER_TOKEN = f"{auth.ADMIN_PREFIX}{VIEWER_ID}_viewer-secret"


@admin(Role.viewer)
async def conflict(request: Request, actor: str) -> Response:
    raise ApiError(409, "exists", "team 'red' already exists")


@admin(Role.operator)
async def engage(request: Request, actor: str) -> Response:
    return ok({"engaged": True}, 201)


@admin(Role.viewer)
async def unaudited(request: Request, actor: str) -> Response:
    raise AuditUnavailable("the audit store is down")


@admin(Role.viewer)
async def store_down(request: Request, actor: str) -> Response:
    raise OSError("connection refused")


@admin(Role.viewer)
async def broken(request: Request, actor: str) -> Response:
    raise RuntimeError("a bug")


class _Uses:
    """Stands in for the store write of a stored token's last use."""

    def note(self, token_id: str) -> None:
        pass


@asynccontextmanager
async def admin_api() -> AsyncIterator[tuple[httpx2.AsyncClient, MemoryAudit]]:
    """Admin routes on a Starlette app with the gateway's exception handlers, over a gateway
    whose governance writes to an in-memory audit: the configured token (admin) and a stored
    viewer token are valid."""
    async with hotpath() as hp:
        snapshots = hp.governance.snapshots
        viewer = AdminToken(auth.digest(VIEWER_TOKEN), "viewer-bot", Role.viewer)
        snapshots.current = dataclasses.replace(snapshots.current, admin_tokens={VIEWER_ID: viewer})
        gateway = SimpleNamespace(
            settings=SimpleNamespace(admin_token=SecretStr(ADMIN_TOKEN), auth="keys"),
            snapshots=snapshots,
            oauth=None,
            governance=hp.governance,
        )
        handlers: list[tuple[str, Any]] = [
            ("/conflict", conflict),
            ("/engage", engage),
            ("/unaudited", unaudited),
            ("/store-down", store_down),
            ("/broken", broken),
        ]
        app = Starlette(
            routes=[Route(path, handler) for path, handler in handlers], exception_handlers=EXCEPTION_HANDLERS
        )
        app.state.gateway = gateway
        app.state.admin_token_uses = _Uses()
        transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client, hp.audit


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_an_api_error_raised_in_a_route_is_answered_with_its_status_and_body() -> None:
    async with admin_api() as (client, _):
        response = await client.get("/conflict", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/json"
    assert response.content == b'{"error":{"code":"exists","message":"team \'red\' already exists"}}'


async def test_a_parameter_with_a_control_character_is_refused_before_the_route_runs() -> None:
    async with admin_api() as (client, _):
        response = await client.get("/engage", params={"team": "a\x01b"}, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 400
    assert response.content == (
        b'{"error":{"code":"invalid_request","message":"team must not contain control characters"}}'
    )


async def test_a_request_without_a_token_is_a_401_with_its_challenge() -> None:
    async with admin_api() as (client, _):
        response = await client.get("/engage")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="mcp-gateway-admin"'
    assert response.content == b'{"error":{"code":"unauthorized","message":"an admin token is required"}}'


async def test_too_small_a_role_is_a_403_naming_both_roles_and_is_audited() -> None:
    async with admin_api() as (client, audit):
        response = await client.get("/engage", headers=bearer(VIEWER_TOKEN))
        allowed = await client.get("/engage", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 403
    assert response.content == (
        b'{"error":{"code":"forbidden","message":"this needs the operator role; \'viewer-bot\' has the viewer role",'
        b'"required_role":"operator","role":"viewer"}}'
    )
    refusals = [r for r in audit.rows if r["kind"] == "admin"]
    assert [(r["principal_id"], r["method"], r["outcome"], r["reason"], r["detail"]) for r in refusals] == [
        ("viewer-bot", "forbidden", "forbidden", "role viewer", "engage needs operator")
    ]
    assert allowed.status_code == 201 and allowed.json() == {"engaged": True}


async def test_an_action_whose_audit_row_cannot_be_written_is_a_503_saying_it_was_not_taken() -> None:
    async with admin_api() as (client, _):
        response = await client.get("/unaudited", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "code": "audit_unavailable",
            "message": "the action was not taken: its audit record could not be written",
        }
    }


async def test_a_store_that_does_not_answer_is_a_503_saying_so() -> None:
    async with admin_api() as (client, _):
        response = await client.get("/store-down", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
    assert "check before retrying" in response.json()["error"]["message"]


async def test_any_other_exception_in_a_route_is_still_a_plain_500() -> None:
    async with admin_api() as (client, _):
        response = await client.get("/broken", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Internal Server Error"
