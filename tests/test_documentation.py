"""The README documents what an operator configures: every field of an upstream, with its
default where it has a plain one."""

from __future__ import annotations

import re

from mcp_gateway.config import HttpUpstream, StdioUpstream

from .support import ROOT


def _upstream_table() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("Every field of an upstream")
    return readme[start : readme.index("\n\n", readme.index("| field |", start))]


def test_every_upstream_field_is_in_the_readme_table_with_its_default() -> None:
    table = _upstream_table()
    rows = {
        name: row
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`(\w+)`", row.split("|")[1])
    }
    for model in (StdioUpstream, HttpUpstream):
        for name, field in model.model_fields.items():
            assert name in rows, f"upstream field {name!r} is not in the README's table"
            default = field.default
            if isinstance(default, bool):
                assert f"`{str(default).lower()}`" in rows[name], name
            elif isinstance(default, float | int | str):
                shown = f"{default:g}" if isinstance(default, float) else str(default)
                assert f"`{shown}`" in rows[name], (name, rows[name])
