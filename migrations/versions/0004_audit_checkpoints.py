"""audit checkpoints: where each chain starts once its oldest rows are pruned

`audit prune` (and the `audit_retention` setting) delete a chain's oldest rows; the first
row kept links to the last row pruned. One checkpoint row per chain carries that row's
position and hash, so `audit verify` starts there instead of at the chain's first row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("chain", sa.String(length=128), nullable=False),
        sa.Column("chain_seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("pruned_at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
