"""dashboard sessions kept in the store, the token sealed with a key only the cookie holds

Before, the dashboard's cookie carried the operator's token itself: an identity provider's
access token over about 2.9 KB did not fit a cookie, and logging out could not end a copy of
the cookie. Now the cookie carries a session id and a key; the row holds the token encrypted
with that key (the CSRF token derives from the key too, so the row holds none), and logging
out deletes the row. Each row names its operator, so one operator's logins are capped among
its own sessions, never another's.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("operator", sa.String(length=128), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_dashboard_sessions_expires_at"), "dashboard_sessions", ["expires_at"], unique=False)
    op.create_index(op.f("ix_dashboard_sessions_operator"), "dashboard_sessions", ["operator"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_dashboard_sessions_operator"), table_name="dashboard_sessions")
    op.drop_index(op.f("ix_dashboard_sessions_expires_at"), table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
