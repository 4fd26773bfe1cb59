"""Tool arguments are checked against the tool's input schema; the flat-schema fast path
decides exactly as jsonschema does."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest

from mcp_gateway.proxy.schemas import CompiledTool, _Flat

FLAT_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "number"}}, "required": ["a", "b"]},
    {
        "type": "object",
        "properties": {"flag": {"type": "boolean"}, "items": {"type": "array"}, "opt": {"type": ["string", "null"]}},
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"anything": {"title": "no type"}, "obj": {"type": "object"}},
        "required": ["obj"],
    },
    {"type": "object"},
]
VALUES: list[Any] = ["x", "", 0, 1, -3, 2.5, 3.0, True, False, None, [], [1], {}, {"k": 1}]


@pytest.mark.parametrize("schema", FLAT_SCHEMAS)
def test_flat_fast_path_agrees_with_jsonschema(schema: dict[str, Any]) -> None:
    assert _Flat.compile(schema) is not None
    validator = jsonschema.Draft202012Validator(schema)
    rnd = random.Random(1)
    names = [*schema.get("properties", {}), "extra"]
    tool = CompiledTool.compile({"name": "t", "inputSchema": schema})
    for _ in range(2000):
        arguments = {n: rnd.choice(VALUES) for n in names if rnd.random() < 0.7}
        fast = tool.argument_problem(arguments)
        assert (fast is None) == validator.is_valid(arguments), (schema, arguments, fast)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}},
        {"type": "object", "properties": {"e": {"enum": ["a", "b"]}}},
        {"type": "object", "properties": {"s": {"type": "string", "pattern": "^x"}}},
        {"anyOf": [{"type": "object"}]},
        {"type": "object", "properties": {"nested": {"type": "object", "properties": {"x": {"type": "string"}}}}},
    ],
)
def test_richer_schemas_go_to_jsonschema_and_are_enforced(schema: dict[str, Any]) -> None:
    assert _Flat.compile(schema) is None
    bad = {"n": 1, "e": "z", "s": "y", "nested": {"x": 1}}
    tool = CompiledTool.compile({"name": "t", "inputSchema": schema})
    expected = jsonschema.Draft202012Validator(schema).is_valid(bad)
    assert (tool.argument_problem(bad) is None) == expected


def test_a_problem_names_the_argument_and_what_is_wrong() -> None:
    tool = CompiledTool.compile({"name": "add", "inputSchema": FLAT_SCHEMAS[1]})
    assert tool.argument_problem({"a": "x", "b": 1}) == "'x' is not of type 'integer' (at a)"
    assert tool.argument_problem({"a": 1}) == "'b' is a required property"
    closed = CompiledTool.compile({"name": "c", "inputSchema": FLAT_SCHEMAS[2]})
    assert "'zzz' was unexpected" in (closed.argument_problem({"zzz": 1}) or "")


def test_an_invalid_schema_is_not_enforced() -> None:
    tool = CompiledTool.compile(
        {"name": "broken", "inputSchema": {"type": "object", "properties": {"x": {"type": 12}}}}
    )
    assert tool.validator is None and tool.schema_error is not None
    assert tool.argument_problem({"x": "anything"}) is None
