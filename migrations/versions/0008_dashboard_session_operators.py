"""dashboard sessions name their operator

Live sessions were capped oldest first whoever they belonged to, so anyone who could log
in (a `viewer` token) could end every other operator's session by logging in past the cap.
Each session now names its operator, and one operator's logins are capped among its own
sessions. Sessions opened before this name no one ('').

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
        batch_op.add_column(sa.Column("operator", sa.String(length=128), server_default="", nullable=False))
        batch_op.create_index(batch_op.f("ix_dashboard_sessions_operator"), ["operator"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dashboard_sessions_operator"))
        batch_op.drop_column("operator")
