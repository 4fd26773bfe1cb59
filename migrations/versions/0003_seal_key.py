"""a key shared by the replicas for sealing request states

A 2026-07-28 upstream's `requestState` reaches the client sealed by the gateway (an HMAC
over the state, the principal, the tool and the call id), so a retry cannot be replayed
under another tool or principal. Every replica must verify what any replica sealed: the
key lives in the store, made once by whichever replica starts first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seal_key", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_state", schema=None) as batch_op:
        batch_op.drop_column("seal_key")
