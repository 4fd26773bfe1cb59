"""admin tokens carry a role, and when they were last used

Admin tokens get one of the roles `viewer`, `operator`, `admin` (mcp_gateway.roles). Tokens
made before roles existed had full rights, so they become `admin`. `last_used_at`: so a
token nobody uses any more can be found and revoked. (`revoked_at` exists
since 0001; it is now set by `admin-token revoke`.)

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("admin_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), server_default="admin", nullable=False))
        batch_op.add_column(sa.Column("last_used_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("admin_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("role")
