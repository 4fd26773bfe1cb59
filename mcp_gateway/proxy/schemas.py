"""Checking tool arguments against the tool's input schema before anything goes upstream.

Validators are compiled once per tool definition. A schema the validator cannot use
(invalid, or pointing at remote `$ref`s, which are never fetched) is not enforced: the
upstream remains the judge of its own arguments, and the gateway logs it once.
"""

from __future__ import annotations

import logging
from typing import Any

import jsonschema
import jsonschema.exceptions
import referencing.exceptions

log = logging.getLogger(__name__)

_validators: dict[int, tuple[dict[str, Any], Any]] = {}
_MAX_CACHED = 4096


def _validator(tool: dict[str, Any]) -> Any:
    schema = tool.get("inputSchema")
    if not isinstance(schema, dict):
        return None
    cached = _validators.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        validator: Any = cls(schema)
    except jsonschema.exceptions.SchemaError as exc:
        log.warning("tool %r has an invalid input schema; arguments are not checked: %s", tool.get("name"), exc.message)
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
