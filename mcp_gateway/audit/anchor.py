"""Anchors: each chain's head (position and hash), written down where the store's
administrators cannot rewrite it.

A hash chain shows a row was edited, removed or inserted only if something later still
links to it: rows cut from a chain's end leave a shorter chain that verifies. An anchor
taken earlier catches that (`audit verify --expect FILE`: a chain shorter than its anchor,
or whose row at the anchor's position has another hash, fails), and lets a later verify
start where the anchor was taken (`audit verify --from-anchor FILE`) instead of at each
chain's first row.

The file is JSON:

    {"format": "mcp-gateway audit anchor", "version": 1, "taken_at": "2026-11-30T13:00:00+00:00",
     "chains": [{"chain": "replica-a", "seq": 12, "hash": "…", "kind": "end", "state": "ended"}]}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

FORMAT = "mcp-gateway audit anchor"
VERSION = 1
_HASH = re.compile(r"[0-9a-f]{64}")


class AnchorError(ValueError):
    """An anchor file that cannot be read or is not an anchor; the message is one line."""


@dataclass(frozen=True)
class Mark:
    """A chain's head when the anchor was taken: its position (`seq`, the row's
    `chain_seq`) and that row's hash."""

    chain: str
    seq: int
    hash: str


def state_of(kind: str | None) -> str:
    """A chain whose newest row is an `end` row was closed by a clean stop; any other is open
    (still written to, or cut short: a crash, or rows deleted from its end)."""
    return "ended" if kind == "end" else "open"


def document(heads: dict[str, dict[str, Any]], now: float) -> dict[str, Any]:
    """The anchor for `heads` (as `store.audit.heads` returns them)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "taken_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "chains": [
            {
                "chain": chain,
                "seq": head["chain_seq"],
                "hash": head["hash"],
                "kind": head["kind"],
                "state": state_of(head["kind"]),
            }
            for chain, head in sorted(heads.items())
        ],
    }


def dumps(anchor: dict[str, Any]) -> bytes:
    return orjson.dumps(anchor, option=orjson.OPT_INDENT_2) + b"\n"


def read(path: Path) -> dict[str, Mark]:
    """The marks of the anchor file at `path`, by chain; `AnchorError` naming what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AnchorError(f"{path}: cannot read the anchor: {exc.strerror or exc}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AnchorError(f"{path}: not JSON, so not an anchor (`mcp-gateway audit anchor` writes one)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("chains"), list):
        raise AnchorError(f"{path}: not an audit anchor (`mcp-gateway audit anchor` writes one)")
    if data.get("version") != VERSION:
        raise AnchorError(f"{path}: anchor version {data.get('version')!r}; this gateway reads version {VERSION}")
    marks: dict[str, Mark] = {}
    for i, entry in enumerate(data["chains"]):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("chain"), str)
            and type(entry.get("seq")) is int
            and entry["seq"] >= 1
            and isinstance(entry.get("hash"), str)
            and _HASH.fullmatch(entry["hash"]) is not None
        )
        if not ok:
            raise AnchorError(f"{path}: chains[{i}] needs a chain (text), a seq (1 or more) and a hash (64 hex digits)")
        marks[entry["chain"]] = Mark(entry["chain"], entry["seq"], entry["hash"])
    return marks
