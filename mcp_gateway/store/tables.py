"""The SQL schema. Alembic migrations in `migrations/` create exactly this (a test runs
`alembic check` to keep the two from drifting).

Times are stored as UTC epoch seconds (floats): comparable in SQL on both SQLite and
PostgreSQL, and cheap to produce on the hot path.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

state = Table(
    "gateway_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("policy_version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("seal_key", String(64), nullable=True),
    # hex of 32 random bytes, made by the first replica to start: see proxy/bridge.Seal
)
"""One row: bumped in the same transaction as every change replicas must pick up."""

teams = Table(
    "teams",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

principals = Table(
    "principals",
    metadata,
    Column("id", String(200), primary_key=True),  # `team/name`: up to 64 + 1 + 128
    Column("team_id", String(64), ForeignKey("teams.id"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    UniqueConstraint("team_id", "name"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("principal_id", String(200), ForeignKey("principals.id"), nullable=False, index=True),
    Column("hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("role", String(16), nullable=False, server_default="admin"),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
)
"""Tokens for the admin API. `role` is a `mcp_gateway.roles.Role` (tokens made before roles
existed had full rights, so they are `admin`); a revoked token keeps its row, for the record.
`last_used_at` is written by each replica at most once a minute per token."""

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("source", String(16), nullable=False),
    Column("content_hash", String(64), nullable=True),
    Column("git_commit", String(64), nullable=True),
    Column("git_dirty", Boolean, nullable=True),
    Column("note", Text, nullable=False, default=""),
)

rules = Table(
    "rules",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("team_id", String(64), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("effect", String(8), nullable=False),
    Column("servers", Text, nullable=False),
    Column("tools", Text, nullable=True),
    Column("prompts", Text, nullable=True),
    Column("resources", Text, nullable=True),
    Column("arguments", Text, nullable=True),
    Column("shadow", Boolean, nullable=False, default=False),
    Column("description", Text, nullable=False, default=""),
    Column("source", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
)
"""A team's allow/deny rules; list-valued columns hold JSON arrays of glob patterns. NULL in
`tools`, `prompts` or `resources`: the rule does not name that kind (a rule that names
none covers every kind; see `policy_model.Rule`)."""

kill_switches = Table(
    "kill_switches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("scope", String(16), nullable=False),
    Column("target", String(256), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("released_at", Float, nullable=True),
    Column("released_by", String(128), nullable=True),
    Column("release_reason", Text, nullable=True),
    Index("ix_kill_switches_active", "released_at"),
)

audit = Table(
    "audit",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("chain", String(128), nullable=False),
    Column("chain_seq", Integer, nullable=False),
    Column("ts", Float, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("call_id", String(32), nullable=True),
    Column("principal_id", String(200), nullable=True),
    Column("team_id", String(64), nullable=True),
    Column("server", String(64), nullable=True),
    Column("tool", String(256), nullable=True),
    Column("method", String(64), nullable=True),
    Column("decision", String(16), nullable=True),
    Column("reason", Text, nullable=True),
    Column("rule_id", String(128), nullable=True),
    Column("shadow", String(16), nullable=True),
    Column("shadow_rule_id", String(128), nullable=True),
    Column("policy_version", Integer, nullable=True),
    Column("arguments", Text, nullable=True),
    Column("args_digest", String(64), nullable=True),
    Column("outcome", String(16), nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("detail", Text, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("subject", String(256), nullable=True),
    Column("issuer", String(512), nullable=True),
    UniqueConstraint("chain", "chain_seq"),
    Index("ix_audit_ts", "ts"),
    Index("ix_audit_team_ts", "team_id", "ts"),
    Index("ix_audit_principal_ts", "principal_id", "ts"),
)
"""Append-only. Each row's `hash` covers its content and `prev_hash`, the hash of the row
before it in the same chain (one chain per gateway process identity). `subject` and
`issuer` name an identity provider's caller (OAuth); a row's hash covers them only when set,
so rows written before they existed keep their hashes."""

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("chain", String(128), primary_key=True),
    Column("chain_seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("pruned_at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
)
"""Where each pruned chain now starts: the position (`chain_seq`), `hash`, time and kind of
the last row pruned from it, so the first row kept still links to something `audit verify`
can check (its `prev_hash` is this `hash`). `rows`: how many rows pruning has removed from
the chain in all. Moved in the transaction that deletes the rows up to it, so no row is ever
left at or before it (`audit verify` fails a chain where one is: a forged row, or a forged
checkpoint hiding rows from the walk)."""

dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("sealed", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("operator", String(128), nullable=False, server_default="", index=True),
)
"""Dashboard logins. `id`: the SHA-256 of the session id the cookie carries. `sealed`: the
operator's token, encrypted with a key only the cookie holds (NULL for the local admin of an
`auth: none` loopback gateway), so reading the store yields no token. A row deleted (logout)
is a cookie that opens nothing, on every replica. `operator`: who logged in (the audit's
actor name), so one operator's logins are capped among its own sessions, not everyone's.
No CSRF token: it derives from the cookie's key, so reading the store gives none."""
