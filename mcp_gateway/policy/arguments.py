"""Per-argument constraints a rule can put on a tool call.

    arguments:
      path: {pattern: "^/srv/public/"}     # a regular expression the value must match (search)
      mode: {enum: [read, list]}           # an allow-list of values
      limit: {max: 100}                    # numeric bounds (min, max)

A constraint on an argument the call does not pass is satisfied only if `required` is
false (the default is true: the rule covers calls that pass the argument it constrains).
"""

from __future__ import annotations

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
    return None
