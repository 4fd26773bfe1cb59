"""Per-argument constraints a rule can put on a tool call.

    arguments:
      path: {pattern: "^/srv/public/"}     # a regular expression the value must match (search)
      mode: {enum: [read, list]}           # an allow-list of values
      limit: {max: 100}                    # numeric bounds (min, max)
      path: {under: /srv/public}           # a path at or below a directory

A constraint on an argument the call does not pass is satisfied only if `required` is
false (the default is true: the rule covers calls that pass the argument it constrains).

`under` is what a path constraint should be; `pattern: "^/srv/public/"` is a regular
expression over the raw string and lets `/srv/public/../secret` through. `under` takes an
absolute path in its normal form and refuses, rather than resolves, every spelling with
more than one reading: `..` (the upstream resolves it after following symlinks, which the
gateway cannot see, so a lexical resolution could be wrong), `.` and empty segments, NUL,
backslashes (a separator to some servers), and percent-encoded `/`, `\\`, `.`, `%` or NUL
(decoded by some servers and not others). What is sent upstream is then exactly the path
that was checked. One trailing `/` is allowed (a directory).
"""

from __future__ import annotations

import posixpath
import re
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: `true` is not `1` (as it is in Python), though `1` is `1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


_ENCODED = re.compile(r"%(?:2f|2e|5c|25|00)", re.I)


def under_problem(path: str) -> str | None:
    """Why `path` is not an absolute path in normal form (trailing `/` allowed), or None."""
    if "\0" in path:
        return "a NUL byte"
    if "\\" in path:
        return "a backslash"
    encoded = _ENCODED.search(path)
    if encoded is not None:
        return f"a percent-encoded separator, dot, '%' or NUL ({encoded.group(0)})"
    if not path.startswith("/"):
        return "no leading '/' (not an absolute path)"
    body = path[1:].removesuffix("/")
    for segment in body.split("/") if body else ():
        if segment in (".", ".."):
            return f"a {segment!r} segment"
        if not segment:
            return "an empty segment ('//')"
    return None


def _under(value: Any, directory: str) -> str | None:
    """Why `value` is not a path at or below `directory` (already in normal form), or None."""
    if not isinstance(value, str):
        return f"must be a path under {directory} (a string)"
    problem = under_problem(value)
    if problem is not None:
        return f"must be a path under {directory} in normal form; it has {problem}"
    # Belt and braces: the normal form is the value itself, and it lies under `directory`.
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if directory == "/" or normal == directory or normal.startswith(directory + "/"):
        return None
    return f"must be under {directory}"


def argument_violation(constraints: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    """Why `arguments` break `constraints`, or None when they satisfy them."""
    for name, rule in constraints.items():
        if name not in arguments:
            if rule.get("required", True):
                return f"argument {name!r} is required by policy"
            continue
        value = arguments[name]
        if "enum" in rule and not any(_same(value, allowed) for allowed in rule["enum"]):
            return f"argument {name!r} must be one of {rule['enum']}"
        if "pattern" in rule and (not isinstance(value, str) or not _regex(rule["pattern"]).search(value)):
            return f"argument {name!r} must match {rule['pattern']!r}"
        if ("min" in rule or "max" in rule) and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"argument {name!r} must be a number"
        if "min" in rule and value < rule["min"]:
            return f"argument {name!r} must be at least {rule['min']}"
        if "max" in rule and value > rule["max"]:
            return f"argument {name!r} must be at most {rule['max']}"
        if "under" in rule and (problem := _under(value, rule["under"])) is not None:
            return f"argument {name!r} {problem}"
    return None
