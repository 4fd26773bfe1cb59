"""dashboard sessions name their operator, and keep no CSRF token

Live sessions were capped oldest first whoever they belonged to, so anyone who could log
in (a `viewer` token) could end every other operator's session by logging in past the cap.
Each session now names its operator, and one operator's logins are capped among its own
sessions. Sessions opened before this name no one (''). The CSRF token is derived from the
cookie's key instead of kept in the row, so reading the store gives none (a page opened
before this refuses its first form as stale; reloading it gives the new token).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.drop_column("csrf")
        batch_op.add_column(sa.Column("operator", sa.String(length=128), server_default="", nullable=False))
        batch_op.create_index(batch_op.f("ix_dashboard_sessions_operator"), ["operator"], unique=False)


def downgrade() -> None:
    # 0007 reads each session's CSRF token from its row, and these rows have none to give:
    # a blank one would match a form that sends a blank token.
    op.execute("DELETE FROM dashboard_sessions")
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dashboard_sessions_operator"))
        batch_op.drop_column("operator")
        batch_op.add_column(sa.Column("csrf", sa.String(length=64), server_default="", nullable=False))
