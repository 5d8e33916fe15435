"""touch ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('playbook', sa.String(length=64), nullable=False),
    sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('counts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('playbook', 'scheduled_for', name=op.f('uq_runs_playbook_scheduled_for'))
    )
    op.create_table('suppressions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=True),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=32), server_default='manual', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(member_id IS NULL) <> (phone IS NULL)', name=op.f('ck_suppressions_one_subject')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suppressions'))
    )
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_suppressions_member_id_channel'), ['member_id', 'channel'], unique=False)
        batch_op.create_index(batch_op.f('ix_suppressions_phone_channel'), ['phone', 'channel'], unique=False)

    op.create_table('touches',
    sa.Column('touch_id', sa.String(length=15), nullable=False),
    sa.Column('playbook', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=False),
    sa.Column('occurrence', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=True),
    sa.Column('priority', sa.Integer(), server_default='50', nullable=False),
    sa.Column('offer', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('message', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('why', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('cost_e4', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('touch_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_id', sa.String(length=128), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('delivery', sa.String(length=16), nullable=True),
    sa.Column('delivery_status', sa.String(length=64), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("delivery IS NULL OR delivery IN ('delivered', 'undelivered')", name=op.f('ck_touches_delivery')),
    sa.CheckConstraint("state IN ('holdout', 'suppressed', 'queued', 'deferred', 'sending', 'sent', 'failed', 'unknown')", name=op.f('ck_touches_state')),
    sa.PrimaryKeyConstraint('touch_id', name=op.f('pk_touches')),
    sa.UniqueConstraint('playbook', 'member_id', 'occurrence', name=op.f('uq_touches_playbook_member_id_occurrence'))
    )
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_touches_lease_until'), ['lease_until'], unique=False)
        batch_op.create_index(batch_op.f('ix_touches_member_id_touch_at'), ['member_id', 'touch_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_touches_playbook_member_id_touch_at'), ['playbook', 'member_id', 'touch_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_touches_playbook_occurrence'), ['playbook', 'occurrence'], unique=False)
        batch_op.create_index(batch_op.f('ix_touches_state_channel_not_before'), ['state', 'channel', 'not_before'], unique=False)

    op.create_table('watermarks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_watermarks'))
    )



def downgrade() -> None:

    op.drop_table('watermarks')
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_touches_state_channel_not_before'))
        batch_op.drop_index(batch_op.f('ix_touches_playbook_occurrence'))
        batch_op.drop_index(batch_op.f('ix_touches_playbook_member_id_touch_at'))
        batch_op.drop_index(batch_op.f('ix_touches_member_id_touch_at'))
        batch_op.drop_index(batch_op.f('ix_touches_lease_until'))

    op.drop_table('touches')
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_suppressions_phone_channel'))
        batch_op.drop_index(batch_op.f('ix_suppressions_member_id_channel'))

    op.drop_table('suppressions')
    op.drop_table('runs')

