"""claim index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.create_index('ix_touches_claim', ['channel', sa.literal_column('priority DESC'), 'decided_at', 'touch_id'], unique=False, postgresql_where=sa.text("state IN ('queued', 'deferred')"), sqlite_where=sa.text("state IN ('queued', 'deferred')"))


def downgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_claim', postgresql_where=sa.text("state IN ('queued', 'deferred')"), sqlite_where=sa.text("state IN ('queued', 'deferred')"))
