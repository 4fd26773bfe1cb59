"""YAML documents that remember where each value came from.

Config and policy files are validated by pydantic models; when a value is wrong the
error must name the file and the line. `load` returns the plain data together with a
`Source` that maps a pydantic error location (`("upstreams", "db", "url")`) back to the
line of the deepest node on that path that exists in the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import ConfigError, Problem

Loc = tuple[str | int, ...]


@dataclass
class Source:
    """Where the values of one YAML file sit: path -> 1-based line."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of `loc`, or of its nearest ancestor present in the file."""
        path = tuple(loc)
        while path:
            line = self.lines.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return self.lines.get(())

    def problems(self, error: ValidationError, prefix: Loc = (), known: Collection[str] = ()) -> list[Problem]:
        """Turn a pydantic error into file:line problems, one per error. `known` are the
        fields of the model validated at `prefix`, to suggest for a misspelt one."""
        out = []
        for item in error.errors(include_url=False):
            loc = prefix + tuple(p for p in item["loc"] if isinstance(p, str | int))
            where = ".".join(str(p) for p in loc) or "document"
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = unknown_field(str(loc[-1]), known if len(loc) == len(prefix) + 1 else ())
            out.append(Problem(self.file, self.line_of(loc), f"{where}: {message}"))
        return out


def unknown_field(name: str, known: Collection[str]) -> str:
    """ "unknown field", with the nearest known name when one is near enough to be meant."""
    near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f"unknown field (did you mean {near[0]}?)" if near else "unknown field"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last."""


def _compose(loader: _Loader, node: yaml.Node, path: Loc, source: Source) -> Any:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | bool | float) and key is not None:
                raise _Problem(key_node, "mapping keys must be scalars")
            if key in out:
                raise _Problem(key_node, f"duplicate key {key!r}")
            child = (*path, key if isinstance(key, str | int) else str(key))
            source.lines[child] = key_node.start_mark.line + 1
            out[key] = _compose(loader, value_node, child, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_compose(loader, item, (*path, i), source) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


class _Problem(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1
        self.message = message


def loads(text: str, file: str) -> tuple[Any, Source]:
    """Parse one YAML document; syntax errors become a `ConfigError` with the line."""
    source = Source(file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, source
        return _compose(loader, node, (), source), source
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and mark is not None and mark.line >= text.count("\n"):
            mark = exc.context_mark  # "got <stream end>": point at what was left open
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([Problem(file, line, f"invalid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, f"invalid YAML: {exc}")]) from None
    except _Problem as exc:
        raise ConfigError([Problem(file, exc.line, exc.message)]) from None
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """A file's text, or a `ConfigError` naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(str(path), None, "not UTF-8 text")]) from None


def load(path: Path) -> tuple[Any, Source]:
    """Read and parse a YAML file."""
    return loads(read_text(path), str(path))


def merge_problems(groups: Iterable[Sequence[Problem]]) -> list[Problem]:
    """Flatten problem lists, ordered by file and line."""
    flat = [p for group in groups for p in group]
    return sorted(flat, key=lambda p: (p.file, p.line or 0))
