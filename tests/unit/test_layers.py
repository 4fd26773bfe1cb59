"""The package's floors: no module imports from a higher one.

A floor is a top-level module (`errors`, `runtime`...) or a subpackage (`store`, `proxy`...).
Imports between floors, counting `TYPE_CHECKING` ones, must form no cycle, so every import
points down. Within a floor, modules may import each other as they like."""

from __future__ import annotations

import ast
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import mcp_gateway

ROOT = Path(mcp_gateway.__file__).parent


def _floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> dict[tuple[str, str], list[str]]:
    """(floor, floor it imports) -> the module imports that make the edge."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: package.count(".") + 2 - node.level]
                    if node.module:
                        targets = [".".join([*base, node.module])]
                    else:
                        targets = [".".join([*base, alias.name]) for alias in node.names]
                elif node.module and node.module.startswith("mcp_gateway."):
                    targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("mcp_gateway.")]
            for target in targets:
                here, there = _floor(module), _floor(target)
                if here and there and here != there:
                    edges[(here, there)].append(f"{module} -> {target}")
    return edges


def _cycle(edges: dict[tuple[str, str], list[str]]) -> list[str] | None:
    below: dict[str, set[str]] = defaultdict(set)
    for here, there in edges:
        below[here].add(there)
    done: set[str] = set()

    def walk(floor: str, path: list[str]) -> list[str] | None:
        if floor in path:
            return [*path[path.index(floor) :], floor]
        if floor in done:
            return None
        for lower in sorted(below[floor]):
            found = walk(lower, [*path, floor])
            if found:
                return found
        done.add(floor)
        return None

    for floor in sorted(below):
        found = walk(floor, [])
        if found:
            return found
    return None


def test_no_module_imports_from_a_higher_floor_of_the_package() -> None:
    edges = _imports()
    assert edges, "no imports found: the walk is broken"
    cycle = _cycle(edges)
    if cycle is not None:
        why = [line for a, b in pairwise(cycle) for line in edges[(a, b)]]
        raise AssertionError("floors import each other: " + " -> ".join(cycle) + "\n" + "\n".join(why))
