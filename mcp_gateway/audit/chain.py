"""The hash chain: each row's hash covers its content and the previous row's hash."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ..store.audit import CONTENT_COLUMNS

GENESIS = "0" * 64


def row_hash(row: dict[str, Any]) -> str:
    """SHA-256 over the row's content columns (canonical JSON, sorted keys), `prev_hash` included."""
    content = {name: row.get(name) for name in CONTENT_COLUMNS}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
