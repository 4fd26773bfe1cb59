"""The admin API's routes and its OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ExceptionHandler

from .. import __version__
from ..errors import ApiError
from . import audit, identity, policy, rules, status, switches, tokens
from .common import handle_api_error, required_role
from .models import EngageSwitch, NewAdminToken, NewKey, NewPrincipal, NewRule, NewTeam, ReleaseSwitch

ROUTES: list[tuple[str, str, Any, type[BaseModel] | None, tuple[str, ...]]] = [
    ("GET", "/status", status.status, None, ()),
    ("GET", "/kill-switches", switches.list_switches, None, ("all",)),
    ("POST", "/kill-switches", switches.engage, EngageSwitch, ()),
    ("POST", "/kill-switches/{id}/release", switches.release, ReleaseSwitch, ()),
    (
        "GET",
        "/audit",
        audit.query,
        None,
        ("since", "until", "team", "principal", "server", "tool", "decision", "kind", "cursor", "limit"),
    ),
    ("GET", "/audit/anchor", audit.anchor, None, ()),
    ("GET", "/teams", identity.list_teams, None, ()),
    ("POST", "/teams", identity.create_team, NewTeam, ()),
    ("GET", "/principals", identity.list_principals, None, ("team",)),
    ("POST", "/principals", identity.create_principal, NewPrincipal, ()),
    ("GET", "/keys", identity.list_keys, None, ("principal",)),
    ("POST", "/keys", identity.create_key, NewKey, ()),
    ("DELETE", "/keys/{id}", identity.revoke_key, None, ()),
    ("GET", "/rules", rules.list_rules, None, ("team",)),
    ("POST", "/rules", rules.create_rule, NewRule, ()),
    ("DELETE", "/rules/{id}", rules.delete_rule, None, ()),
    ("GET", "/policy", policy.show, None, ()),
    ("POST", "/policy/reload", policy.reload, None, ()),
    ("GET", "/admin-tokens", tokens.list_admin_tokens, None, ()),
    ("POST", "/admin-tokens", tokens.create_admin_token, NewAdminToken, ()),
    ("DELETE", "/admin-tokens/{id}", tokens.revoke_admin_token, None, ()),
]
"""Each route: method, path, handler (which names its least role: `@admin(Role.X)`), body
model, query parameters."""

ROLES_NOTE = (
    "Admin tokens carry a role, each including the one below: `viewer` reads; `operator` also "
    "engages and releases kill switches and reloads the policy; `admin` also manages teams, "
    "principals, keys, rules and admin tokens. Each operation names the least role it needs in "
    "`x-required-role`; a token with a smaller role gets 403 `forbidden`."
)


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the admin API, built from the routes and their body models."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for method, path, handler, model, query in ROUTES:
        role = required_role(handler)
        if role is None:
            raise TypeError(f"{method} {path}: an admin route names its role with @admin(Role.X)")
        creates = method == "POST" and not path.endswith(("/release", "/reload"))
        ok = "201" if creates else "200"
        operation: dict[str, Any] = {
            "operationId": f"{method.lower()}_"
            + path.strip("/").replace("{id}", "by_id").replace("/", "_").replace("-", "_"),
            "summary": (handler.__doc__ or "").strip().split("\n")[0],
            "description": f"Needs the `{role}` role or above.",
            "x-required-role": role.value,
            "security": [{"adminToken": []}],
            "responses": {
                ok: {"description": "Created" if creates else "OK", "content": {"application/json": {}}},
                "401": {"description": "No valid admin token"},
                "403": {"description": f"The token's role is below `{role}`"},
            },
        }
        if "{id}" in path:
            operation["responses"]["404"] = {"description": "No such item"}
        if creates:
            operation["responses"]["409"] = {"description": "It exists already, or rules are managed by policy files"}
        if query:
            operation["responses"]["400"] = {"description": "Invalid query parameters"}
        if path == "/policy/reload":
            operation["responses"]["409"] = {"description": "No policy directory configured"}
            operation["responses"]["422"] = {"description": "The policy directory is invalid; the live policy stays"}
        if method == "POST" and path == "/kill-switches":
            operation["responses"]["422"] = {
                "description": "The server or tool it names is not configured (the message names those that are); "
                "send `unconfigured: true` to engage it anyway"
            }
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in ("id",) if "{id}" in path
        ]
        parameters += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in query]
        if parameters:
            operation["parameters"] = parameters
        if model is not None:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in schema.pop("$defs", {}).items():
                schemas[name] = definition
            schemas[model.__name__] = schema
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            }
            operation["responses"]["400"] = {"description": "Invalid request body"}
        if method == "POST":
            operation["responses"]["503"] = {"description": "Not done: the audit record could not be written"}
        paths.setdefault(f"/admin/api{path}", {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "mcp-gateway admin API", "version": __version__, "description": ROLES_NOTE},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The `admin_token` setting (role admin) or a token made with "
                    "`mcp-gateway admin-token create --role viewer|operator|admin`. " + ROLES_NOTE,
                }
            },
        },
    }


async def openapi_endpoint(request: Request) -> JSONResponse:
    return JSONResponse(openapi())


EXCEPTION_HANDLERS: dict[Any, ExceptionHandler] = {ApiError: handle_api_error}
"""The app's exception handlers for the admin API: a route raises `ApiError`, one handler
answers. (Registered on the app, not the mount: an exception middleware on the mount would
stand in for the app's own handlers under /admin/api.)"""


def admin_routes() -> Mount:
    """The admin API, to mount on the gateway's app (handlers reach the gateway through it)."""
    routes = [Route(path, handler, methods=[method]) for method, path, handler, _, _ in ROUTES]
    routes.append(Route("/openapi.json", openapi_endpoint))
    return Mount("/admin/api", routes=routes)
