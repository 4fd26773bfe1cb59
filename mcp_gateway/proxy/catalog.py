"""The gateway's merged catalog: every ready upstream's tools, prompts and resources under
gateway names, and the way back from a gateway name to `(upstream, original name)`.

Names: a tool or prompt `t` of an upstream with namespace `ns` is `ns__t`; a resource URI
`u` is `ns+u` (a valid URI scheme prefix, so clients still see a URI). With an empty
namespace names pass through unchanged. Two upstreams claiming one gateway name is a
collision: the upstream listed first in the configuration keeps the name, the other's
entry is left out and the collision is reported, never silently shadowed.

Resource URIs are routed in their RFC 3986 normal form (`policy.uris`): `route_uri`
normalises the URI a client sent, refuses one with no single reading (invalid params),
and returns the URI the upstream is sent, which is the normal form the policy decided on
(or, for a resource the upstream listed, the upstream's own spelling of that same URI).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError
from ..policy.uris import AmbiguousURI, normal_form, normalize
from ..protocol import INVALID_PARAMS
from .schemas import CompiledTool
from .upstream import Upstream

log = logging.getLogger(__name__)

SEPARATOR = "__"
KINDS = ("tools", "prompts", "resources", "templates")


@dataclass(frozen=True, slots=True)
class Entry:
    """One catalog item: the upstream that serves it and its definitions on both sides."""

    upstream: Upstream
    original: str
    exposed: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolEntry(Entry):
    """A tool, with what its input schema compiles to (compiled when its upstream listed it)."""

    tool: CompiledTool


@dataclass(frozen=True, slots=True)
class Template:
    upstream: Upstream
    original: str
    pattern: re.Pattern[str]
    exposed: dict[str, Any]


@dataclass
class CatalogSnapshot:
    """An immutable view of the merged catalog; replaced whole on every change."""

    tools: dict[str, ToolEntry] = field(default_factory=dict)
    prompts: dict[str, Entry] = field(default_factory=dict)
    resources: dict[str, Entry] = field(default_factory=dict)
    templates: list[Template] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    by_normal_uri: dict[str, Entry] = field(default_factory=dict)
    """Listed resources by the normal form of their gateway URI (what requests are routed by)."""

    def listing(self, kind: str) -> list[dict[str, Any]]:
        return [exposed for _, _, exposed in self.entries(kind)]

    def entries(self, kind: str) -> list[tuple[Upstream, str, dict[str, Any]]]:
        """(upstream, name the upstream knows, definition as exposed) for each item of a kind."""
        if kind == "templates":
            return [(t.upstream, t.original, t.exposed) for t in self.templates]
        entries: dict[str, Entry] = getattr(self, kind)
        return [(e.upstream, e.original, e.exposed) for e in entries.values()]


def exposed_name(upstream: Upstream, name: str) -> str:
    return f"{upstream.namespace}{SEPARATOR}{name}" if upstream.namespace else name


def exposed_uri(upstream: Upstream, uri: str) -> str:
    return f"{upstream.namespace}+{uri}" if upstream.namespace else uri


def original_uri(upstream: Upstream, uri: str) -> str:
    """The URI an upstream knows a gateway URI by (`exposed_uri` undone)."""
    return uri[len(upstream.namespace) + 1 :] if upstream.namespace else uri


def template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template expands to (enough to route reads)."""
    out, pos = [], 0
    for match in re.finditer(r"\{([^}]*)\}", template):
        out.append(re.escape(template[pos : match.start()]))
        op = match.group(1)[:1]
        out.append(".*" if op in "+#/?&;." and op else "[^/]*")
        pos = match.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z", re.S)


class Catalog:
    """Builds snapshots from upstreams and resolves gateway names."""

    def __init__(self, upstreams: Iterable[Upstream]) -> None:
        self.upstreams = list(upstreams)
        self.by_namespace = {u.namespace: u for u in self.upstreams if u.namespace}
        self.unprefixed = [u for u in self.upstreams if not u.namespace]
        self.snapshot = CatalogSnapshot()

    def rebuild(self) -> set[str]:
        """Recompute from the upstreams' current catalogs; returns the kinds that changed."""
        new = CatalogSnapshot()
        for upstream in self.upstreams:
            if upstream.state != "ready":
                continue
            cat = upstream.catalog
            for name, original, exposed in _claim(new, new.tools, "tool", upstream, cat.tools, "name", exposed_name):
                new.tools[name] = ToolEntry(upstream, original, exposed, cat.compiled[original])
            for kind, what, key, rename in (
                ("prompts", "prompt", "name", exposed_name),
                ("resources", "resource", "uri", exposed_uri),
            ):
                into: dict[str, Entry] = getattr(new, kind)
                for name, original, exposed in _claim(new, into, what, upstream, cat.get(kind), key, rename):
                    into[name] = Entry(upstream, original, exposed)
            for item in cat.templates:
                exposed = {**item, "uriTemplate": exposed_uri(upstream, item["uriTemplate"])}
                pattern = template_pattern(_normal_or_same(exposed["uriTemplate"]))
                new.templates.append(Template(upstream, item["uriTemplate"], pattern, exposed))
        for uri, entry in new.resources.items():
            normal = normal_form(uri)
            # A listed URI with no single reading is refused when asked for, and `decide`
            # keeps it out of listings; it is indexed by its spelling to keep the map whole.
            new.by_normal_uri.setdefault(normal if isinstance(normal, str) else uri, entry)
        old, self.snapshot = self.snapshot, new
        for conflict in new.conflicts:
            if conflict not in old.conflicts:
                log.error("name collision: %s", conflict)
        return {k for k in KINDS if old.listing(k) != new.listing(k)}

    def tool(self, name: str) -> ToolEntry | None:
        return self.snapshot.tools.get(name)

    def prompt(self, name: str) -> Entry | None:
        return self.snapshot.prompts.get(name)

    def route_uri(self, uri: str) -> tuple[Upstream, str] | None:
        """The upstream that serves a gateway resource URI, and the URI it is sent.

        Raises `ProtocolError` (invalid params) for a URI with no single reading."""
        snap = self.snapshot
        normal = _normalized(uri)
        entry = snap.resources.get(uri) or snap.by_normal_uri.get(normal)
        if entry is not None:
            return entry.upstream, entry.original
        scheme, plus, rest = normal.partition("+")
        if plus:
            upstream = self.by_namespace.get(scheme)
            if upstream is not None:
                return upstream, rest
        for template in snap.templates:
            if template.pattern.match(normal):
                return template.upstream, original_uri(template.upstream, normal)
        if len(self.unprefixed) == 1:
            return self.unprefixed[0], normal
        return None

    def route_template(self, uri_template: str) -> tuple[Upstream, str] | None:
        """The upstream of a gateway URI template (for completions), matched in normal form."""
        wanted = _normal_or_same(uri_template)
        for template in self.snapshot.templates:
            if _normal_or_same(template.exposed["uriTemplate"]) == wanted:
                return template.upstream, template.original
        return None


def _claim(
    snap: CatalogSnapshot,
    taken: Mapping[str, Entry],
    what: str,
    upstream: Upstream,
    items: list[dict[str, Any]],
    key: str,
    rename: Callable[[Upstream, str], str],
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(gateway name, original name, definition as exposed) for each item that claims a free
    name; a name already taken (the caller adds each item before the next) is a collision,
    reported in `snap.conflicts`."""
    for item in items:
        original = item[key]
        name = rename(upstream, original)
        holder = taken.get(name)
        if holder is not None:
            snap.conflicts.append(
                f"{what} {name!r} of upstream {upstream.name!r} collides with upstream "
                f"{holder.upstream.name!r}; it is left out (give one of them a namespace)"
            )
            continue
        yield name, original, {**item, key: name} if name != original else item


def _normalized(uri: str) -> str:
    try:
        return normalize(uri)
    except AmbiguousURI as exc:
        raise ProtocolError(INVALID_PARAMS, f"ambiguous resource URI {uri!r}: {exc}", {"uri": uri}) from None


def _normal_or_same(uri: str) -> str:
    normal = normal_form(uri)
    return normal if isinstance(normal, str) else uri
