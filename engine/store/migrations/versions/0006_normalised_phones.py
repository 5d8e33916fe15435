"""normalised phones

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Data only: every phone stored in `members` and `suppressions` becomes the bare 11-digit mainland
number it spells (`engine.grammar.addresses.mainland_mobile`), as the importer, `siyu suppress`
and the reply paths now store them; otherwise a phone opt-out stored as `+8613800001111` stops
matching the member now imported as `13800001111`. A phone suppression whose normal form is
already suppressed on the same channel is removed as a duplicate. A phone that does not normalise
is left as stored and reported (digits masked): its member is unreachable by sms and ai_call
(`engine.store.reachability`), and a suppression keeps matching it as stored.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

from engine.grammar.addresses import mainland_mobile, masked
from engine.store.reachability import mobile_shaped

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_log = logging.getLogger("siyu.migrations")  # warnings reach stderr even where logging is not configured

_members = sa.table('members', sa.column('member_id', sa.String), sa.column('phone', sa.String))
_suppressions = sa.table('suppressions', sa.column('id', sa.Integer), sa.column('phone', sa.String),
                         sa.column('channel', sa.String))


def upgrade() -> None:
    conn = op.get_bind()
    left: list[str] = []
    rows = conn.execute(sa.select(_members.c.member_id, _members.c.phone).where(  # only phones not yet bare
        _members.c.phone.is_not(None), _members.c.phone != '', sa.not_(mobile_shaped(_members.c.phone)))).all()
    changed = []
    for member_id, phone in rows:
        number = mainland_mobile(phone)
        if number is None:
            left.append(f"member {member_id}: phone {masked(phone)!r} (unreachable by sms and ai_call)")
        elif number != phone:
            changed.append({'key': member_id, 'number': number})
    if changed:
        conn.execute(sa.update(_members).where(_members.c.member_id == sa.bindparam('key'))
                     .values(phone=sa.bindparam('number')), changed)
    suppressed = conn.execute(sa.select(_suppressions.c.id, _suppressions.c.phone, _suppressions.c.channel)
                        .where(_suppressions.c.phone.is_not(None)).order_by(_suppressions.c.id)).all()
    existing = {(phone, channel) for _, phone, channel in suppressed}
    renamed, duplicates = [], []
    for id_, phone, channel in suppressed:
        number = mainland_mobile(phone)
        if number is None:
            left.append(f"suppression {id_} ({channel}): phone {masked(phone)!r} (kept, matched as stored)")
        elif number != phone:
            if (number, channel) in existing:
                duplicates.append({'key': id_})
            else:
                existing.add((number, channel))
                renamed.append({'key': id_, 'number': number})
    if renamed:
        conn.execute(sa.update(_suppressions).where(_suppressions.c.id == sa.bindparam('key'))
                     .values(phone=sa.bindparam('number')), renamed)
    if duplicates:
        conn.execute(sa.delete(_suppressions).where(_suppressions.c.id == sa.bindparam('key')), duplicates)
    if changed or renamed or duplicates:
        _log.warning("0006: %d member phone(s) and %d suppression phone(s) normalised (%d duplicate(s) removed)",
                     len(changed), len(renamed) + len(duplicates), len(duplicates))
    for line in left:
        _log.warning("0006: not a mainland mobile number, left as stored: %s", line)


def downgrade() -> None:
    """Nothing to undo: a normalised phone is a valid spelling of the same number."""
