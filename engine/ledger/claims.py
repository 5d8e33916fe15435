"""Touches in dispatch: what is due, claiming a batch under a lease, settling or releasing what was claimed,
and the leases and deferrals that run out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping

from engine.ledger.dialect import one_of
from engine.ledger.touches import TouchState
from engine.store.schema import CLAIMABLE_STATES, touches


def _due(channel: str, now: datetime) -> ColumnElement[bool]:
    """Rows of `channel` a claim would take: queued, or deferred whose `not_before` has come.

    The first state test repeats the claim index's WHERE (engine/store/schema.py, ix_touches_claim),
    with the states written into the SQL: SQLite uses a partial index only for a query that
    contains its WHERE term, and PostgreSQL cannot match it against bound parameters in a
    prepared statement's generic plan."""
    claimable: BindParameter[str] = bindparam("claimable_states", CLAIMABLE_STATES, expanding=True,
                                              literal_execute=True)
    return and_(touches.c.channel == channel, touches.c.state.in_(claimable),
                or_(touches.c.state == TouchState.queued,
                    and_(touches.c.state == TouchState.deferred, touches.c.not_before <= now)))


def claim_has_work(conn: Connection, channel: str, now: datetime) -> bool:
    """Would a claim of `channel` now find anything to do (a due row, or a deferred row to expire)?
    One indexed read, so an idle dispatcher polls without taking the write lock."""
    expiring = and_(touches.c.state == TouchState.deferred, touches.c.expires_at.is_not(None),
                    touches.c.expires_at <= now)
    return conn.execute(select(literal(1)).where(or_(_due(channel, now), expiring)).limit(1)).first() is not None


def claim_batch(conn: Connection, channel: str, now: datetime, limit: int, lease: timedelta,
                owner: str) -> list[RowMapping]:
    """Claim up to `limit` due rows of `channel` for sending: they become `sending` under a lease.

    Due: `queued`, or `deferred` whose `not_before` has come. Higher priority first, then
    the order they were decided in. On PostgreSQL, SKIP LOCKED lets replicas share the queue.
    The caller commits before calling the adapter.
    """
    candidates = (select(touches.c.touch_id).where(_due(channel, now))
                  .order_by(touches.c.priority.desc(), touches.c.decided_at, touches.c.touch_id)
                  .limit(limit).with_for_update(skip_locked=True))
    ids = [row[0] for row in conn.execute(candidates)]
    if not ids:
        return []
    conn.execute(update(touches).where(one_of(conn, touches.c.touch_id, ids))
                 .values(state=TouchState.sending, lease_until=now + lease, lease_owner=owner,
                         claimed_at=now, attempts=touches.c.attempts + 1))
    return list(conn.execute(select(touches).where(one_of(conn, touches.c.touch_id, ids))
                             .order_by(touches.c.priority.desc(), touches.c.decided_at, touches.c.touch_id))
                .mappings())


def due_count(conn: Connection, channel: str, now: datetime) -> int:
    """Rows of `channel` a claim would take now (the same condition as the claim's)."""
    return int(conn.execute(select(func.count()).select_from(touches).where(_due(channel, now))).scalar_one())


def settle(conn: Connection, touch_id: str, state: TouchState, *, owner: str | None = None,
           **values: Any) -> bool:
    """Move a `sending` row to its outcome; False when the row is no longer ours (lease lost)."""
    conditions = [touches.c.touch_id == touch_id, touches.c.state == TouchState.sending]
    if owner is not None:
        conditions.append(touches.c.lease_owner == owner)
    result = conn.execute(update(touches).where(*conditions)
                          .values(state=state, lease_until=None, **values))
    return bool(result.rowcount)


def settle_many(conn: Connection, state: TouchState, owner: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Move several `sending` rows held by `owner` to `state`: one UPDATE, executed once per row
    (executemany). Each mapping holds `touch_id` and that row's values, all mappings the same
    columns. A row no longer ours (lease lost) is left as it is; returns how many rows moved."""
    if not rows:
        return 0
    columns = [c for c in rows[0] if c != "touch_id"]
    # bound as `b_<column>`: SQLAlchemy reserves the column names themselves for the SET clause
    statement = (update(touches)
                 .where(touches.c.touch_id == bindparam("b_touch_id"), touches.c.state == TouchState.sending,
                        touches.c.lease_owner == owner)
                 .values(state=state, lease_until=None, **{c: bindparam(f"b_{c}") for c in columns}))
    result = conn.execute(statement, [{f"b_{k}": v for k, v in row.items()} for row in rows])
    return int(result.rowcount or 0)


def settle_unknown(conn: Connection, touch_id: str, owner: str, code: str | None, message: str | None) -> bool:
    """Nothing could settle a lost send: `unknown`, for the operator. The send's own error is kept
    when the lookup gave none (a lost answer); a row with neither had a sender that died mid-send."""
    result = conn.execute(update(touches).where(
        touches.c.touch_id == touch_id, touches.c.state == TouchState.sending, touches.c.lease_owner == owner)
        .values(state=TouchState.unknown, lease_until=None,
                error_code=code if code else func.coalesce(touches.c.error_code, "lease_expired"),
                error_message=message if message else func.coalesce(
                    touches.c.error_message, "the sender died mid-send; the vendor cannot say whether it was sent")))
    return bool(result.rowcount)


def await_lookup(conn: Connection, touch_id: str, owner: str, lookup_at: datetime, **values: Any) -> bool:
    """Keep a `sending` row whose send outcome is unknown for the reconciler: its lease now ends at
    `lookup_at`, when the vendor's query API is asked. False when the row is no longer ours."""
    result = conn.execute(update(touches).where(
        touches.c.touch_id == touch_id, touches.c.state == TouchState.sending, touches.c.lease_owner == owner)
        .values(lease_until=lookup_at, **values))
    return bool(result.rowcount)


def release(conn: Connection, touch_id: str, state: TouchState, *, owner: str | None = None, **values: Any) -> bool:
    """Give a claimed row back (`queued` or `deferred`) without sending it; False if no longer ours."""
    conditions = [touches.c.touch_id == touch_id, touches.c.state == TouchState.sending]
    if owner is not None:
        conditions.append(touches.c.lease_owner == owner)
    result = conn.execute(update(touches).where(*conditions)
                          .values(state=state, lease_until=None, lease_owner=None, **values))
    return bool(result.rowcount)


def extend_lease(conn: Connection, touch_id: str, lease_until: datetime, owner: str) -> None:
    """Take over (or extend) the lease of a `sending` row."""
    conn.execute(update(touches).where(touches.c.touch_id == touch_id, touches.c.state == TouchState.sending)
                 .values(lease_until=lease_until, lease_owner=owner))


def extend_leases(conn: Connection, touch_ids: Sequence[str], lease_until: datetime, owner: str) -> None:
    """Keep holding rows whose sends are still in flight (only ours, only while `sending`)."""
    conn.execute(update(touches).where(one_of(conn, touches.c.touch_id, touch_ids), touches.c.lease_owner == owner,
                                       touches.c.state == TouchState.sending).values(lease_until=lease_until))


def expired_leases(conn: Connection, now: datetime, limit: int) -> list[RowMapping]:
    """`sending` rows whose lease ran out: their holder died or hangs. Locked for the caller on PostgreSQL."""
    return list(conn.execute(
        select(touches).where(touches.c.state == TouchState.sending, touches.c.lease_until < now)
        .order_by(touches.c.lease_until).limit(limit).with_for_update(skip_locked=True)).mappings())


def expire_deferred(conn: Connection, now: datetime) -> int:
    """Deferred rows past their `expires_at` are dropped as suppressed/expired."""
    result = conn.execute(update(touches).where(
        touches.c.state == TouchState.deferred, touches.c.expires_at.is_not(None), touches.c.expires_at <= now)
        .values(state=TouchState.suppressed, reason="expired"))
    return int(result.rowcount or 0)
