"""State the channels share across replicas: vendor access tokens (one refresher at a time) and channel pauses."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, or_, select, update
from sqlalchemy.engine import RowMapping

from engine.ledger.dialect import dialect_insert
from engine.store.schema import channel_pauses, vendor_tokens


def token_row(conn: Connection, key: str) -> RowMapping | None:
    return conn.execute(select(vendor_tokens).where(vendor_tokens.c.key == key)).mappings().first()


def claim_token_refresh(conn: Connection, key: str, owner: str, now: datetime, hold: timedelta) -> bool:
    """Become the one refresher of token `key` for `hold`; False while another replica holds it."""
    conn.execute(dialect_insert(conn)(vendor_tokens).values(key=key, updated_at=now).on_conflict_do_nothing())
    result = conn.execute(update(vendor_tokens).where(
        vendor_tokens.c.key == key,
        or_(vendor_tokens.c.refreshing_until.is_(None), vendor_tokens.c.refreshing_until < now,
            vendor_tokens.c.refreshing_owner == owner))
        .values(refreshing_until=now + hold, refreshing_owner=owner))
    return bool(result.rowcount)


def store_token(conn: Connection, key: str, token: str, expires_at: datetime, now: datetime) -> None:
    conn.execute(update(vendor_tokens).where(vendor_tokens.c.key == key).values(
        token=token, expires_at=expires_at, refreshing_until=None, refreshing_owner=None, updated_at=now))


def release_token_refresh(conn: Connection, key: str, owner: str) -> None:
    conn.execute(update(vendor_tokens).where(vendor_tokens.c.key == key, vendor_tokens.c.refreshing_owner == owner)
                 .values(refreshing_until=None, refreshing_owner=None))


def invalidate_token(conn: Connection, key: str, bad_token: str) -> bool:
    """Forget token `key` only if it is still `bad_token`: a replica never discards another's fresh token."""
    result = conn.execute(update(vendor_tokens).where(vendor_tokens.c.key == key,
                                                      vendor_tokens.c.token == bad_token)
                          .values(token=None, expires_at=None))
    return bool(result.rowcount)


def pause_channel(conn: Connection, channel: str, code: str | None, reason: str, now: datetime,
                  resume_at: datetime) -> None:
    statement = dialect_insert(conn)(channel_pauses).values(channel=channel, code=code, reason=reason,
                                                            paused_at=now, resume_at=resume_at)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[channel_pauses.c.channel],
        set_={"code": code, "reason": reason, "paused_at": now, "resume_at": resume_at}))


def resume_channel(conn: Connection, channel: str) -> bool:
    return bool(conn.execute(delete(channel_pauses).where(channel_pauses.c.channel == channel)).rowcount)


def channel_pauses_now(conn: Connection) -> dict[str, RowMapping]:
    return {row["channel"]: row for row in conn.execute(select(channel_pauses)).mappings()}
