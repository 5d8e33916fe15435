"""Suppressions: members and phones that must not be touched, per channel or on all.

Phones are kept and looked up normalised (`engine.grammar.addresses.mainland_mobile`), so an
opt-out matches the member whatever spelling either was given in; a phone that does not
normalise (a foreign number replying, a row migration 0006 could not normalise) is kept and
matched as given.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, insert, or_, select
from sqlalchemy.engine import RowMapping

from engine.grammar.addresses import mainland_mobile
from engine.ledger.dialect import one_of
from engine.store.schema import suppressions


def suppressed_channels(conn: Connection, members: Sequence[tuple[str, str | None]]) -> dict[str, set[str]]:
    """member_id → channels ('all' included) suppressed for that member or for their phone."""
    found: dict[str, set[str]] = defaultdict(set)
    members = [(member_id, phone_key(phone)) for member_id, phone in members]
    for start in range(0, len(members), 900):
        chunk = members[start:start + 900]
        ids = [m for m, _ in chunk]
        phones = {p: m for m, p in chunk if p}
        rows = conn.execute(select(suppressions.c.member_id, suppressions.c.phone, suppressions.c.channel).where(
            or_(one_of(conn, suppressions.c.member_id, ids), one_of(conn, suppressions.c.phone, list(phones)))))
        for member_id, phone, channel in rows:
            if member_id is not None:
                found[member_id].add(channel)
            elif phone in phones:
                for m, p in chunk:
                    if p == phone:
                        found[m].add(channel)
    return found


def phone_key(phone: str | None) -> str | None:
    """How a phone is stored and matched here: normalised when it normalises, else as given."""
    return None if phone is None else mainland_mobile(phone) or phone


def add_suppression(conn: Connection, *, member_id: str | None, phone: str | None, channel: str,
                    reason: str | None, source: str, now: datetime) -> bool:
    """Record a suppression (its phone normalised); False if the same one exists already."""
    phone = phone_key(phone)
    subject = suppressions.c.member_id == member_id if member_id is not None else suppressions.c.phone == phone
    exists = conn.execute(select(suppressions.c.id).where(subject, suppressions.c.channel == channel)).first()
    if exists is not None:
        return False
    conn.execute(insert(suppressions).values(member_id=member_id, phone=phone, channel=channel, reason=reason,
                                             source=source, created_at=now))
    return True


def remove_suppression(conn: Connection, *, member_id: str | None, phone: str | None, channel: str) -> int:
    """Remove a suppression of a member, or of a phone in any spelling; how many were removed."""
    phone = phone_key(phone)
    subject = suppressions.c.member_id == member_id if member_id is not None else suppressions.c.phone == phone
    return int(conn.execute(delete(suppressions).where(subject, suppressions.c.channel == channel)).rowcount or 0)


def list_suppressions(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(suppressions).order_by(suppressions.c.created_at, suppressions.c.id)).mappings())
