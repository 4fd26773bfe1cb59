"""The audit columns added for OAuth callers (`subject`, `issuer`) are covered by a row's hash
when set, and leave the hash of a row without them as it was before they existed (so chains
written before migration 0006 still verify)."""

from __future__ import annotations

import hashlib

import orjson

from mcp_gateway.audit.chain import GENESIS, link, row_hash
from mcp_gateway.store.audit import CONTENT_COLUMNS

ROW = {"ts": 1.0, "kind": "decision", "principal_id": "platform/alice", "team_id": "platform"}


def test_a_row_without_identity_hashes_as_before_the_columns_existed() -> None:
    linked = link(ROW, "c", 1, GENESIS)
    before = [c for c in CONTENT_COLUMNS if c not in ("subject", "issuer")]
    content = orjson.dumps({c: linked.get(c) for c in before}, option=orjson.OPT_SORT_KEYS)
    assert linked["hash"] == hashlib.sha256(content).hexdigest()


def test_editing_the_subject_or_issuer_of_a_row_breaks_its_hash() -> None:
    linked = link({**ROW, "subject": "alice", "issuer": "https://idp.example.com"}, "c", 1, GENESIS)
    assert row_hash(linked) == linked["hash"]
    for column, forged in (("subject", "mallory"), ("issuer", "https://evil.example.com"), ("subject", None)):
        assert row_hash({**linked, column: forged}) != linked["hash"], column
