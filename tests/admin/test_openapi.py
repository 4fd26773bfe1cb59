"""The admin API's OpenAPI document, as served: an OpenAPI 3.1 document naming every route
with its method, whose references resolve and whose schemas say what the API accepts."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from jsonschema import Draft202012Validator

from mcp_gateway.admin.routes import ROUTES

from ..support import admin_client, serve, write_config

pytestmark = pytest.mark.anyio

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[str]:
    # No policy directory, so the rule routes answer for real.
    config = write_config(tmp_path, {}, auth="keys", policies=None)
    async with serve(config) as (url, _):
        yield url


@pytest.fixture
async def document(gateway: str) -> dict[str, Any]:
    async with admin_client(gateway) as admin:
        response = await admin.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return dict(response.json())


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are expected: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"dangling reference {ref}"
        node = node[part]
    return node


def _body_schema(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    """The request body's schema as a standalone JSON Schema that resolves against the document."""
    body = document["paths"][f"/admin/api{path}"][method]["requestBody"]["content"]["application/json"]["schema"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": document["components"], **body}


async def test_it_is_an_openapi_3_1_document(document: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert isinstance(document["info"]["title"], str) and document["info"]["title"]
    assert isinstance(document["info"]["version"], str) and document["info"]["version"]
    assert set(document) <= {
        "openapi",
        "info",
        "jsonSchemaDialect",
        "servers",
        "paths",
        "webhooks",
        "components",
        "security",
        "tags",
        "externalDocs",
    }
    for path, item in document["paths"].items():
        assert path.startswith("/"), path
        for method, operation in item.items():
            assert method in METHODS, (path, method)
            assert operation["responses"], (path, method)
            for code in operation["responses"]:
                assert re.fullmatch(r"[1-5](\d\d|XX)|default", code), (path, method, code)
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{([^}]+)\}", path)), (path, method)
            for parameter in operation.get("parameters", []):
                assert parameter["in"] in ("query", "header", "path", "cookie")
                assert parameter["in"] != "path" or parameter["required"] is True
            for requirement in operation.get("security", []):
                assert set(requirement) <= set(document["components"]["securitySchemes"])


async def test_every_route_appears_with_its_method(document: dict[str, Any]) -> None:
    documented = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    expected = {(method, f"/admin/api{path}") for method, path, _, _, _ in ROUTES}
    assert expected <= documented, expected - documented
    for method, path, _, _, query in ROUTES:
        operation = document["paths"][f"/admin/api{path}"][method.lower()]
        named = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        assert named == set(query), (method, path)


async def test_request_bodies_reference_component_schemas_that_exist(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for method, path, _, model, _ in ROUTES:
        operation = document["paths"][f"/admin/api{path}"][method.lower()]
        if model is None:
            assert "requestBody" not in operation, (method, path)
            continue
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model.__name__}"}, (method, path)
        assert model.__name__ in schemas
    for ref in _refs(document):
        _resolve(document, ref)
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        assert "$defs" not in schema, f"{name}: nested definitions belong in components"


VALID_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/teams", {"id": "alpha", "description": "Alpha agents"}),
    ("POST", "/principals", {"team": "alpha", "name": "ci-bot", "kind": "agent"}),
    ("POST", "/keys", {"team": "alpha", "name": "ci-bot"}),
    ("POST", "/rules", {"id": "alpha-x", "team": "alpha", "effect": "allow", "servers": ["x"], "tools": ["read_*"]}),
    (
        "POST",
        "/kill-switches",
        {
            "scope": "tool",
            "server": "x",
            "tool": "echo",
            "reason": "drill",
            "expires_in_seconds": 60,
            "unconfigured": True,
        },
    ),
]
INVALID_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/teams", {"id": "Not A Team"}),
    ("POST", "/principals", {"team": "alpha", "name": "ci-bot", "kind": "robot"}),
    ("POST", "/keys", {"team": "alpha"}),
    ("POST", "/rules", {"id": "r", "team": "alpha", "effect": "maybe", "servers": ["x"]}),
    ("POST", "/kill-switches", {"scope": "everything", "reason": "drill"}),
    ("POST", "/teams", {"id": "alpha", "colour": "red"}),
]


async def test_the_published_body_schemas_agree_with_what_the_api_accepts(
    gateway: str, document: dict[str, Any]
) -> None:
    async with admin_client(gateway) as admin:
        for method, path, body in VALID_BODIES:
            Draft202012Validator(_body_schema(document, path, method.lower())).validate(body)
            response = await admin.request(method, path, json=body)
            assert response.status_code in (200, 201), (path, response.text)
        for method, path, body in INVALID_BODIES:
            assert not Draft202012Validator(_body_schema(document, path, method.lower())).is_valid(body), (path, body)
            response = await admin.request(method, path, json=body)
            assert response.status_code == 400, (path, body, response.text)


async def test_every_status_the_api_answers_with_is_documented(gateway: str, document: dict[str, Any]) -> None:
    """A client generated from the document must know the statuses it will get."""
    exchanges: list[tuple[str, str, str, httpx2.Response]] = []
    async with admin_client(gateway) as admin:

        async def call(method: str, route: str, path: str, body: Any = None) -> httpx2.Response:
            response = await admin.request(method, path, json=body)
            exchanges.append((method, route, path, response))
            return response

        await call("GET", "/status", "/status")
        await call("POST", "/teams", "/teams", {"id": "alpha"})
        await call("POST", "/teams", "/teams", {"id": "alpha"})
        await call("POST", "/principals", "/principals", {"team": "alpha", "name": "bot"})
        key = (await call("POST", "/keys", "/keys", {"team": "alpha", "name": "bot"})).json()
        await call("GET", "/keys", "/keys")
        await call("DELETE", "/keys/{id}", f"/keys/{key['id']}")
        await call("DELETE", "/keys/{id}", "/keys/no-such-key")
        await call("POST", "/rules", "/rules", {"id": "r1", "team": "alpha", "effect": "allow", "servers": ["x"]})
        await call("POST", "/rules", "/rules", {"id": "r1", "team": "alpha", "effect": "allow", "servers": ["x"]})
        await call("DELETE", "/rules/{id}", "/rules/r1")
        await call("DELETE", "/rules/{id}", "/rules/r1")
        switch = (await call("POST", "/kill-switches", "/kill-switches", {"scope": "global", "reason": "drill"})).json()
        await call("POST", "/kill-switches/{id}/release", f"/kill-switches/{switch['id']}/release", {"reason": "done"})
        await call("POST", "/kill-switches/{id}/release", "/kill-switches/ks_none/release", {"reason": "done"})
        await call("POST", "/policy/reload", "/policy/reload")
        await call("GET", "/audit", "/audit?limit=-1")
    undocumented = sorted(
        {
            f"{method} {route} -> {response.status_code}"
            for method, route, _, response in exchanges
            if str(response.status_code) not in document["paths"][f"/admin/api{route}"][method.lower()]["responses"]
        }
    )
    assert not undocumented, "undocumented statuses:\n" + "\n".join(undocumented)
