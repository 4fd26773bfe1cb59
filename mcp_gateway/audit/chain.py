"""The hash chain: each row's hash covers its content and the previous row's hash."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ..store.audit import CONTENT_COLUMNS, OPTIONAL_COLUMNS

GENESIS = "0" * 64

_BLANK: dict[str, Any] = dict.fromkeys(CONTENT_COLUMNS)


def _digest(content: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _covered(row: dict[str, Any]) -> dict[str, Any]:
    """The content a row's hash covers: every content column, except the columns added after
    the chain's format was fixed when they are empty (so older rows keep their hashes)."""
    return {
        name: row.get(name) for name in CONTENT_COLUMNS if name not in OPTIONAL_COLUMNS or row.get(name) is not None
    }


def row_hash(row: dict[str, Any]) -> str:
    """SHA-256 over the row's content columns (canonical JSON, sorted keys), `prev_hash` included."""
    return _digest(_covered(row))


def link(row: dict[str, Any], chain: str, seq: int, prev: str) -> dict[str, Any]:
    """`row` as it is stored: every column but the database's `seq`, in table order, with
    its place in `chain` after the row whose hash is `prev`, and its own hash (the same
    as `row_hash` of it)."""
    linked = {**_BLANK, **row, "chain": chain, "chain_seq": seq, "prev_hash": prev}
    if len(linked) != len(_BLANK):
        raise ValueError(f"not audit columns: {sorted(linked.keys() - _BLANK.keys())}")
    linked["hash"] = _digest(_covered(linked))
    return linked
