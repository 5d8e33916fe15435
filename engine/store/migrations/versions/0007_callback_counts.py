"""callback counts: vendor pushes per day, route and outcome

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'callback_counts',
        sa.Column('day', sa.String(length=10), nullable=False),
        sa.Column('route', sa.String(length=64), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.Column('last_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('day', 'route', 'outcome', name=op.f('pk_callback_counts')),
    )


def downgrade() -> None:
    op.drop_table('callback_counts')
