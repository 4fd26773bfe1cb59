"""The merged catalog: gateway names for every upstream's tools, prompts and resources,
collisions refused and reported, and the way back from a gateway name or URI to the
upstream that serves it. Upstreams here are real `Upstream` objects that never connect:
their state and catalog are set by hand."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from mcp_gateway.config import StdioUpstream
from mcp_gateway.errors import ProtocolError
from mcp_gateway.protocol import INVALID_PARAMS
from mcp_gateway.proxy.catalog import Catalog, template_pattern
from mcp_gateway.proxy.upstream import Events, Upstream, UpstreamCatalog


def upstream(
    name: str,
    namespace: str | None = None,
    *,
    tools: Sequence[str] = (),
    prompts: Sequence[str] = (),
    resources: Sequence[str] = (),
    templates: Sequence[str] = (),
    state: str = "ready",
) -> Upstream:
    config = StdioUpstream(command="unused", namespace=namespace)
    server = Upstream(name, config, Events())
    server.state = state  # type: ignore[assignment]
    server.catalog = UpstreamCatalog(
        tools=[{"name": t, "description": f"{t} of {name}", "inputSchema": {"type": "object"}} for t in tools],
        prompts=[{"name": p, "arguments": [{"name": "x", "required": True}]} for p in prompts],
        resources=[{"uri": r, "name": r, "mimeType": "text/plain"} for r in resources],
        templates=[{"uriTemplate": t, "name": t} for t in templates],
    )
    return server


def built(*upstreams: Upstream) -> Catalog:
    catalog = Catalog(upstreams)
    catalog.rebuild()
    return catalog


def names(catalog: Catalog, kind: str) -> list[str]:
    key = {"resources": "uri", "templates": "uriTemplate"}.get(kind, "name")
    return [item[key] for item in catalog.snapshot.listing(kind)]


# -- naming ----------------------------------------------------------------------------------


def test_a_namespace_prefixes_names_and_uris_and_keeps_everything_else() -> None:
    files = upstream(
        "files",
        tools=["read"],
        prompts=["summarize"],
        resources=["file:///a.txt"],
        templates=["file:///{path}"],
    )
    catalog = built(files)
    assert names(catalog, "tools") == ["files__read"]
    assert names(catalog, "prompts") == ["files__summarize"]
    assert names(catalog, "resources") == ["files+file:///a.txt"]
    assert names(catalog, "templates") == ["files+file:///{path}"]
    tool = catalog.snapshot.listing("tools")[0]
    assert tool == {**files.catalog.tools[0], "name": "files__read"}
    prompt = catalog.snapshot.listing("prompts")[0]
    assert prompt["arguments"] == [{"name": "x", "required": True}]
    entry = catalog.tool("files__read")
    assert entry is not None and entry.upstream is files and entry.original == "read"


def test_a_configured_namespace_replaces_the_server_name() -> None:
    catalog = built(upstream("search-server", "web", tools=["find"], resources=["web://index"]))
    assert names(catalog, "tools") == ["web__find"]
    assert names(catalog, "resources") == ["web+web://index"]


def test_an_empty_namespace_exposes_names_unchanged() -> None:
    plain = upstream("plain", "", tools=["read"], prompts=["p"], resources=["test://r"], templates=["test://t/{id}"])
    catalog = built(plain)
    assert names(catalog, "tools") == ["read"]
    assert names(catalog, "prompts") == ["p"]
    assert names(catalog, "resources") == ["test://r"]
    assert names(catalog, "templates") == ["test://t/{id}"]
    entry = catalog.prompt("p")
    assert entry is not None and entry.upstream is plain and entry.original == "p"


def test_only_ready_upstreams_are_in_the_catalog() -> None:
    up, down = upstream("up", tools=["a"]), upstream("down", tools=["a"], state="down")
    catalog = built(up, down)
    assert names(catalog, "tools") == ["up__a"]
    assert catalog.tool("down__a") is None


def test_rebuild_reports_which_kinds_changed() -> None:
    files = upstream("files", tools=["read"], resources=["file:///a"])
    catalog = Catalog([files])
    assert catalog.rebuild() == {"tools", "resources"}
    assert catalog.rebuild() == set()
    files.catalog = UpstreamCatalog(
        tools=[*files.catalog.tools, {"name": "write", "inputSchema": {"type": "object"}}],
        resources=files.catalog.resources,
    )
    assert catalog.rebuild() == {"tools"}
    files.state = "down"
    assert catalog.rebuild() == {"tools", "resources"}
    assert catalog.tool("files__read") is None


# -- collisions --------------------------------------------------------------------------------


def test_a_colliding_name_stays_with_the_first_configured_upstream_and_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = upstream("first", "", tools=["search"], prompts=["p"], resources=["test://shared"])
    second = upstream("second", "", tools=["search", "own"], prompts=["p"], resources=["test://shared"])
    with caplog.at_level(logging.ERROR, logger="mcp_gateway.proxy.catalog"):
        catalog = built(first, second)
    assert names(catalog, "tools") == ["search", "own"]
    for entry in (catalog.tool("search"), catalog.prompt("p"), catalog.snapshot.resources["test://shared"]):
        assert entry is not None and entry.upstream is first
    own = catalog.tool("own")
    assert own is not None and own.upstream is second
    conflicts = catalog.snapshot.conflicts
    assert len(conflicts) == 3
    assert all("'second'" in c and "'first'" in c for c in conflicts)
    assert any("'search'" in c for c in conflicts)
    assert len([r for r in caplog.records if "collision" in r.getMessage()]) == 3
    caplog.clear()
    catalog.rebuild()  # the same collisions again: reported once, not on every rebuild
    assert not [r for r in caplog.records if "collision" in r.getMessage()]


def test_a_prefixed_name_can_collide_with_an_unprefixed_one() -> None:
    plain = upstream("plain", "", tools=["docs__read"])
    docs = upstream("docs", tools=["read"])
    catalog = built(plain, docs)
    entry = catalog.tool("docs__read")
    assert entry is not None and entry.upstream is plain
    assert len(catalog.snapshot.conflicts) == 1


def test_the_order_of_configuration_decides_a_collision() -> None:
    a, b = upstream("a", "", tools=["t"]), upstream("b", "", tools=["t"])
    for order in ((a, b), (b, a)):
        entry = built(*order).tool("t")
        assert entry is not None and entry.upstream is order[0]


# -- routing URIs ------------------------------------------------------------------------------


def test_a_listed_resource_routes_to_its_upstream_by_exact_uri() -> None:
    files = upstream("files", resources=["file:///a.txt"])
    plain = upstream("plain", "", resources=["test://r"])
    catalog = built(files, plain, upstream("other", ""))
    assert catalog.route_uri("files+file:///a.txt") == (files, "file:///a.txt")
    assert catalog.route_uri("test://r") == (plain, "test://r")


def test_a_prefixed_uri_routes_to_its_namespace_even_when_not_listed() -> None:
    files, web = upstream("files"), upstream("web")
    catalog = built(files, web)
    assert catalog.route_uri("web+https://example.com/x?y=1") == (web, "https://example.com/x?y=1")
    assert catalog.route_uri("files+file:///deep/path") == (files, "file:///deep/path")


def test_a_uri_matching_an_unprefixed_template_routes_to_its_upstream() -> None:
    first, templated = (
        upstream("first", ""),
        upstream("templated", "", templates=["test://template/{id}/data"]),
    )
    catalog = built(first, templated)
    assert catalog.route_uri("test://template/42/data") == (templated, "test://template/42/data")
    assert catalog.route_uri("test://template/4/2/data") is None


def test_an_unknown_uri_routes_to_the_single_unprefixed_upstream_only() -> None:
    named, plain = upstream("named"), upstream("plain", "")
    assert built(named, plain).route_uri("test://anything") == (plain, "test://anything")
    assert built(named, plain, upstream("plain2", "")).route_uri("test://anything") is None
    assert built(named).route_uri("test://anything") is None
    assert built(named).route_uri("nowhere+test://anything") is None


def test_a_uri_is_routed_and_sent_upstream_in_its_normal_form() -> None:
    # Issue 11: `%31` reached a resource a deny rule named as `1`. What is routed, decided
    # and sent is the normal form, so the upstream gets exactly the URI the policy judged.
    plain = upstream("plain", "", templates=["test://template/{id}/data"])
    catalog = built(upstream("first", ""), plain)
    assert catalog.route_uri("test://template/%31/data") == (plain, "test://template/1/data")
    assert catalog.route_uri("TEST://Template/2/../1/data") == (plain, "test://template/1/data")
    files = upstream("files")
    assert built(files).route_uri("files+file:///srv/public/../secret.txt") == (files, "file:///srv/secret.txt")
    assert built(files).route_uri("FILES+file:///a/%7Eb") == (files, "file:///a/~b")


def test_a_listed_resource_is_found_by_any_spelling_and_sent_as_the_upstream_lists_it() -> None:
    odd = upstream("odd", "", resources=["Test://Host/a%7eb"])
    catalog = built(odd, upstream("other", ""))
    assert catalog.route_uri("test://host/a~b") == (odd, "Test://Host/a%7eb")
    assert catalog.route_uri("Test://Host/a%7eb") == (odd, "Test://Host/a%7eb")


@pytest.mark.parametrize(
    "uri", ["test://template/1%2Fdata", "files+file:///srv/public/%2e%2e/secret.txt", "test://t/%zz", "no-scheme"]
)
def test_an_ambiguous_uri_is_refused_with_invalid_params_naming_the_problem(uri: str) -> None:
    catalog = built(upstream("files"), upstream("plain", "", templates=["test://template/{id}/data"]))
    with pytest.raises(ProtocolError) as refused:
        catalog.route_uri(uri)
    assert refused.value.code == INVALID_PARAMS
    assert refused.value.message.startswith(f"ambiguous resource URI {uri!r}: ")
    assert refused.value.data == {"uri": uri}


def test_a_template_is_found_by_any_spelling_of_its_exposed_uri_template() -> None:
    docs = upstream("docs", templates=["docs://{page}"])
    assert built(docs).route_template("DOCS+docs://{page}") == (docs, "docs://{page}")


def test_a_template_is_found_by_its_exposed_uri_template() -> None:
    docs = upstream("docs", templates=["docs://{page}"])
    plain = upstream("plain", "", templates=["test://{id}"])
    catalog = built(docs, plain)
    assert catalog.route_template("docs+docs://{page}") == (docs, "docs://{page}")
    assert catalog.route_template("test://{id}") == (plain, "test://{id}")
    assert catalog.route_template("docs://{page}") is None


@pytest.mark.parametrize(
    ("template", "matches", "misses"),
    [
        ("test://template/{id}/data", ["test://template/42/data", "test://template//data"],
         ["test://template/4/2/data", "test://template/42/data/x", "xtest://template/42/data"]),
        ("file:///{+path}", ["file:///a/b/c.txt", "file:///"], ["file://a"]),
        ("search://q{?query,limit}", ["search://q?query=x&limit=3", "search://q"], ["search://r?query=x"]),
        ("a.b://{x}", ["a.b://1"], ["aXb://1"]),
        ("ns+test://{id}", ["ns+test://7"], ["nsxtest://7", "ns+test://7/8"]),
    ],
)  # fmt: skip
def test_template_pattern_matches_what_the_template_expands_to(
    template: str, matches: list[str], misses: list[str]
) -> None:
    pattern = template_pattern(template)
    for uri in matches:
        assert pattern.match(uri), uri
    for uri in misses:
        assert not pattern.match(uri), uri


def _entry_fields(catalog: Catalog, name: str) -> dict[str, Any]:
    entry = catalog.tool(name)
    assert entry is not None
    return entry.exposed


def test_exposed_definitions_are_copies_not_the_upstreams_own() -> None:
    files = upstream("files", tools=["read"])
    exposed = _entry_fields(built(files), "files__read")
    assert exposed["name"] == "files__read"
    assert files.catalog.tools[0]["name"] == "read"
