"""rules name their kinds: tools, prompts and resources may be NULL (not named)

Until 0001 every rule had all three columns set, `["*"]` where the policy file or API call
left a kind out, and a rule that named only tools also granted (or denied) every prompt
and resource of its servers. Now a rule covers only the kinds it names, and one that names
none covers every kind. Existing rows are read as written under the old defaults: a kind
stored as exactly `["*"]` becomes NULL (not named). A rule that was `["*"]` everywhere
still covers everything; a rule that named only tools now covers only tools. A bundle that
spelled out `["*"]` for a kind gets it back when it is applied again (`serve` with
`policies:` re-applies a bundle whose stored rules differ from it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KINDS = ("tools", "prompts", "resources")
_RULES = sa.table("rules", *(sa.column(kind, sa.Text()) for kind in _KINDS))


def upgrade() -> None:
    with op.batch_alter_table("rules", schema=None) as batch_op:
        for kind in _KINDS:
            batch_op.alter_column(kind, existing_type=sa.Text(), nullable=True)
    for kind in _KINDS:
        column = _RULES.c[kind]
        op.execute(_RULES.update().where(sa.func.replace(column, " ", "") == '["*"]').values({kind: None}))


def downgrade() -> None:
    # The old schema cannot say "not named": a rule that named no kind gets `["*"]` for all
    # three, and a kind left out beside a named one gets `[]` (matches nothing).
    tools, prompts, resources = (_RULES.c[kind] for kind in _KINDS)
    names_none = sa.and_(tools.is_(None), prompts.is_(None), resources.is_(None))
    op.execute(_RULES.update().where(names_none).values(tools='["*"]', prompts='["*"]', resources='["*"]'))
    for kind in _KINDS:
        op.execute(_RULES.update().where(_RULES.c[kind].is_(None)).values({kind: "[]"}))
    with op.batch_alter_table("rules", schema=None) as batch_op:
        for kind in _KINDS:
            batch_op.alter_column(kind, existing_type=sa.Text(), nullable=False)
