"""who an identity provider says the caller is, on each audit row

With `auth: oauth` a principal comes from an access token: its `sub` and `iss` are recorded
beside the principal id on every row its requests write. Empty for API keys and admin rows,
and then not covered by the row's hash, so rows written before this revision keep theirs.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-30 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("issuer", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_column("issuer")
        batch_op.drop_column("subject")
