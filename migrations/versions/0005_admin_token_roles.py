"""admin tokens carry a role

Admin tokens get one of the roles `viewer`, `operator`, `admin` (mcp_gateway.roles). Tokens
made before roles existed had full rights, so they become `admin`. (`revoked_at` exists
since 0001; it is now set by `admin-token revoke`.)

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("admin_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), server_default="admin", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("admin_tokens", schema=None) as batch_op:
        batch_op.drop_column("role")
