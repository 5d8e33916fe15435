"""What the vendors report after a send: delivery receipts on touches, and member events (e.g. call results)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, select, update
from sqlalchemy.engine import RowMapping

from engine.grammar.addresses import ADDRESS_FIELDS
from engine.ledger.dialect import dialect_insert
from engine.ledger.touches import TouchState
from engine.store.schema import events, members, touches


def record_delivery(conn: Connection, *, touch_id: str | None, vendor_id: str | None, delivered: bool,
                    status: str, at: datetime | None, result: Mapping[str, Any] | None = None) -> str | None:
    """Record a delivery receipt on its touch (found by touch_id, else vendor_id); idempotent.

    Returns the touch_id it landed on, or None when no sent touch matches. A receipt that
    says the same thing again changes nothing.
    """
    where = _named_by(touch_id, vendor_id)
    if where is None:
        return None
    row = conn.execute(select(touches.c.touch_id, touches.c.delivery, touches.c.delivery_status)
                       .where(where).limit(1)).first()
    if row is None:
        return None
    delivery = "delivered" if delivered else "undelivered"
    if row.delivery == delivery and row.delivery_status == status:
        return str(row.touch_id)
    values: dict[str, Any] = {"delivery": delivery, "delivery_status": status, "delivered_at": at}
    if result:
        values["vendor_result"] = dict(result)
    conn.execute(update(touches).where(touches.c.touch_id == row.touch_id).values(**values))
    return str(row.touch_id)


def receipt_target(conn: Connection, *, touch_id: str | None, vendor_id: str | None) -> RowMapping | None:
    """The sent touch a receipt names (by touch_id, else vendor_id) with its channel, provider and the
    member's addresses as stored now; None when no sent touch matches."""
    where = _named_by(touch_id, vendor_id)
    if where is None:
        return None
    columns = [touches.c.touch_id, touches.c.channel, touches.c.provider, touches.c.member_id,
               *(members.c[name] for name in sorted({f for fields in ADDRESS_FIELDS.values() for f in fields}))]
    return conn.execute(select(*columns).select_from(touches.outerjoin(members, members.c.member_id ==
                                                                       touches.c.member_id))
                        .where(where).limit(1)).mappings().first()


def _named_by(touch_id: str | None, vendor_id: str | None) -> ColumnElement[bool] | None:
    """The sent touch a receipt names: by our touch_id, else by the vendor's id (None: it names none)."""
    if touch_id is not None:
        named = touches.c.touch_id == touch_id
    elif vendor_id is not None:
        named = touches.c.vendor_id == vendor_id
    else:
        return None
    return and_(named, touches.c.state.in_(("sent", "unknown")))


def awaiting_receipts(conn: Connection, channel: str, since: datetime, limit: int = 1000) -> list[RowMapping]:
    """Sent touches of `channel` since `since` with no delivery result yet."""
    return list(conn.execute(select(touches).where(
        touches.c.channel == channel, touches.c.state == TouchState.sent, touches.c.delivery.is_(None),
        touches.c.sent_at >= since).order_by(touches.c.sent_at).limit(limit)).mappings())


def add_member_event(conn: Connection, event_id: str, member_id: str, type_: str, occurred_at: datetime,
                     attributes: Mapping[str, Any]) -> bool:
    """Insert an event (e.g. `ai_call_result`) once; False if that event id exists."""
    statement = dialect_insert(conn)(events).values(event_id=event_id, member_id=member_id, type=type_,
                                                    occurred_at=occurred_at, attributes=dict(attributes))
    result = conn.execute(statement.on_conflict_do_nothing())
    return bool(result.rowcount)
