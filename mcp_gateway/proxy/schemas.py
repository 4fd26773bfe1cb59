"""What the gateway derives from a tool's input schema: the check of its arguments before
anything goes upstream, and the `Mcp-Param-*` headers (SEP-2243) its arguments are mirrored
into.

Each tool is compiled once, when its upstream's catalog is read (`CompiledTool.compile`),
and carried on the catalog entry; calls take it from there. Most tool schemas are flat: an
object of typed properties, some required. Those are checked by a few lines of code here, at
a fraction of a general validator's cost per call; anything richer goes to `jsonschema`. A
schema the validator cannot use (invalid, or pointing at remote `$ref`s, which are never
fetched) is not enforced: the upstream remains the judge of its own arguments, and the
gateway logs it once, when the tool is compiled.
"""

from __future__ import annotations

import hashlib
import logging
import reprlib
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.exceptions
import referencing.exceptions
from mcp.shared.inbound import find_invalid_x_mcp_header, mcp_param_headers, x_mcp_header_map

from .. import jsonrpc
from ..protocol import X_MCP_HEADER_KEY

log = logging.getLogger(__name__)

_shown = reprlib.Repr()
"""A wrong value is named in the error; a long or deep one only in part."""
_shown.maxstring, _shown.maxother, _shown.maxlevel = 80, 80, 3

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment"})
_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


class _Flat:
    """A flat object schema: typed properties, `required`, `additionalProperties`."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.required = tuple(schema.get("required", ()))
        self.closed = schema.get("additionalProperties") is False
        self.types: dict[str, tuple[str, ...]] = {}
        for name, prop in schema.get("properties", {}).items():
            kind = prop.get("type")
            self.types[name] = (kind,) if isinstance(kind, str) else tuple(kind or ())

    @classmethod
    def compile(cls, schema: dict[str, Any]) -> _Flat | None:
        if set(schema) - _ANNOTATIONS - {"type", "properties", "required", "additionalProperties"}:
            return None
        if schema.get("type", "object") != "object" or schema.get("additionalProperties", True) not in (True, False):
            return None
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if (
            not isinstance(properties, dict)
            or not isinstance(required, list)
            or not all(isinstance(r, str) for r in required)
        ):
            return None
        for prop in properties.values():
            if not isinstance(prop, dict) or set(prop) - _ANNOTATIONS - {"type"}:
                return None
            kind = prop.get("type")
            kinds = [kind] if isinstance(kind, str) else kind
            if kind is not None and (not isinstance(kinds, list) or not kinds or any(k not in _TYPES for k in kinds)):
                return None
        return cls(schema)

    def problem(self, arguments: dict[str, Any]) -> str | None:
        for name in self.required:
            if name not in arguments:
                return f"{name!r} is a required property"
        for name, value in arguments.items():
            kinds = self.types.get(name)
            if kinds is None:
                if self.closed:
                    return f"Additional properties are not allowed ({name!r} was unexpected)"
                continue
            if kinds and not any(_TYPES[k](value) for k in kinds):
                expected = kinds[0] if len(kinds) == 1 else list(kinds)
                return f"{_shown.repr(value)} is not of type {expected!r} (at {name})"
        return None


_ANNOTATION = X_MCP_HEADER_KEY.encode()


def schema_text(schema: Any) -> bytes:
    """A tool schema's JSON text: what its size, its annotations and its changes are read from."""
    return jsonrpc.dumps(schema)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledTool:
    """One tool's input schema, compiled: its argument check and its `Mcp-Param-*` header map."""

    name: str
    schema: Any
    """The `inputSchema` as the upstream listed it."""
    validator: Any
    """A `_Flat`, a `jsonschema` validator, or None: the schema is not a dict, or not valid."""
    schema_error: str | None
    """Why the schema is not enforced, when it is an invalid schema (logged by the upstream)."""
    header_map: dict[tuple[str, ...], str]
    """Argument path -> `Mcp-Param-*` header name, for a request sent upstream; empty when the
    schema mirrors nothing or annotates invalidly (a conforming client then sends none)."""
    annotated: bool
    """Whether the schema mentions `x-mcp-header` at all: only then may a client's request
    carry `Mcp-Param-*` headers that need checking against its arguments."""
    digest: bytes
    """The SHA-256 of the schema's JSON text, to tell whether a relisted schema changed."""

    @classmethod
    def compile(cls, tool: dict[str, Any], *, text: bytes | None = None, unchecked: str | None = None) -> CompiledTool:
        """`text`: the schema's JSON, when the caller has it already. `unchecked`: why the
        arguments are not to be checked at all (the schema is too large to compile); its
        `Mcp-Param-*` headers are still mapped."""
        schema = tool.get("inputSchema")
        if text is None:
            text = schema_text(schema)
        name = tool.get("name")
        validator: Any = None
        error: str | None = unchecked
        header_map: dict[tuple[str, ...], str] = {}
        if isinstance(schema, dict):
            validator = _Flat.compile(schema) if unchecked is None else None
            if validator is None and unchecked is None:
                try:
                    kind = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
                    kind.check_schema(schema)
                    validator = kind(schema)
                except jsonschema.exceptions.SchemaError as exc:
                    error = exc.message
            if find_invalid_x_mcp_header(schema) is None:
                header_map = x_mcp_header_map(schema)
        annotated = isinstance(schema, dict) and _ANNOTATION in text
        digest = hashlib.sha256(text).digest()
        return cls(name if isinstance(name, str) else "", schema, validator, error, header_map, annotated, digest)

    def compiled_from(self, text: bytes) -> bool:
        """Whether the schema whose JSON is `text` is the one this was compiled from. Compared
        as JSON, not with Python's `==`, which holds `True == 1` and `False == 0` where JSON
        Schema does not (`enum`, `const`): a schema relisted with `true` where it had `1`
        would keep the old check."""
        return hashlib.sha256(text).digest() == self.digest

    def argument_problem(self, arguments: dict[str, Any]) -> str | None:
        """What is wrong with `arguments` for this tool, or None when they fit its schema."""
        validator = self.validator
        if validator is None:
            return None
        if isinstance(validator, _Flat):
            return validator.problem(arguments)
        try:
            if validator.is_valid(arguments):
                return None
            error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
        except (referencing.exceptions.Unresolvable, RecursionError) as exc:
            log.debug("tool %r: schema not enforceable: %s", self.name, exc)
            return None
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{error.message} (at {where})" if where else error.message

    def param_headers(self, arguments: Any) -> dict[str, str]:
        """The `Mcp-Param-*` headers a request with `arguments` carries upstream."""
        if not self.header_map or not isinstance(arguments, dict):
            return {}
        return mcp_param_headers(self.header_map, arguments)
