"""Checking tool arguments against the tool's input schema before anything goes upstream.

Validators are compiled once per tool definition. Most tool schemas are flat: an object
of typed properties, some required. Those are checked by a few lines of code here, at a
fraction of a general validator's cost per call; anything richer goes to `jsonschema`.
A schema the validator cannot use (invalid, or pointing at remote `$ref`s, which are
never fetched) is not enforced: the upstream remains the judge of its own arguments,
and the gateway logs it once.
"""

from __future__ import annotations

import logging
import reprlib
from typing import Any

import jsonschema
import jsonschema.exceptions
import referencing.exceptions

log = logging.getLogger(__name__)

_validators: dict[int, tuple[dict[str, Any], Any]] = {}
_shown = reprlib.Repr()
"""A wrong value is named in the error; a long or deep one only in part."""
_shown.maxstring, _shown.maxother, _shown.maxlevel = 80, 80, 3
_MAX_CACHED = 4096

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


def _validator(tool: dict[str, Any]) -> Any:
    schema = tool.get("inputSchema")
    if not isinstance(schema, dict):
        return None
    cached = _validators.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    validator: Any = _Flat.compile(schema)
    if validator is None:
        try:
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            cls.check_schema(schema)
            validator = cls(schema)
        except jsonschema.exceptions.SchemaError as exc:
            log.warning(
                "tool %r has an invalid input schema; arguments are not checked: %s", tool.get("name"), exc.message
            )
            validator = None
    if len(_validators) >= _MAX_CACHED:
        _validators.clear()
    _validators[id(schema)] = (schema, validator)
    return validator


def argument_problem(tool: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    """What is wrong with `arguments` for `tool`, or None when they fit its schema."""
    validator = _validator(tool)
    if validator is None:
        return None
    if isinstance(validator, _Flat):
        return validator.problem(arguments)
    try:
        if validator.is_valid(arguments):
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except (referencing.exceptions.Unresolvable, RecursionError) as exc:
        log.debug("tool %r: schema not enforceable: %s", tool.get("name"), exc)
        return None
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message} (at {where})" if where else error.message
