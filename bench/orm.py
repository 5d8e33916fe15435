"""The brand's tables as ORM classes, for the per-member loop in bench/audience.py: what a
home-made rules engine does (load a member, walk its orders, decide in Python).

Mapped onto Siyu's own Core tables (engine/store/schema.py), so types and time zones are the same;
relationships load lazily, one query per member and collection, as such engines do.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy.orm import DeclarativeBase, relationship

from engine.store.schema import coupons, member_tags, members, order_items, orders


class Base(DeclarativeBase):
    pass


class Tag(Base):
    __table__ = member_tags


class Coupon(Base):
    __table__ = coupons


class Item(Base):
    __table__ = order_items


class Order(Base):
    __table__ = orders
    items = relationship(Item, lazy="select")

    def paid_by(self, at: datetime) -> bool:
        return bool(self.status == "paid" and self.paid_at is not None and self.paid_at <= at)


class Member(Base):
    __table__ = members
    orders = relationship(Order, lazy="select")
    tags = relationship(Tag, lazy="select")
    coupons = relationship(Coupon, lazy="select")

    def reachable(self, channel: str) -> bool:
        present = lambda value: bool(value)
        if channel == "sms":
            return present(self.phone) and not self.sms_opt_out
        if channel == "ai_call":
            return present(self.phone) and not self.call_opt_out
        if channel == "wecom":
            return present(self.wecom_external_userid) and present(self.wecom_staff_userid)
        return present(self.oa_openid) and bool(self.oa_subscribed)

    def paid_lines(self, at: datetime, *, category: str, trial: bool | None = None) -> list[datetime]:
        """paid_at of each paid order with a line of `category` (and trial flag)."""
        return [o.paid_at for o in self.orders if o.paid_by(at)
                and any(i.category == category and (trial is None or i.trial == trial) for i in o.items)]

    def last_paid(self, at: datetime, *, category: str) -> datetime | None:
        return max(self.paid_lines(at, category=category), default=None)

    def stats(self, at: datetime) -> dict[str, Any]:
        """Order count, total, last purchase and habitual platform of the paid orders."""
        paid = [o for o in self.orders if o.paid_by(at)]
        if not paid:
            return {"order_count": 0, "total_fen": 0, "last_purchase_at": None, "habitual_platform": None}
        count: Counter[str | None] = Counter(o.platform for o in paid)
        latest = {p: max(o.paid_at for o in paid if o.platform == p) for p in count}
        habitual = min(count, key=lambda p: (-count[p], -latest[p].timestamp(), p is None, p or ""))
        return {"order_count": len(paid), "total_fen": sum(o.amount_fen for o in paid),
                "last_purchase_at": max(latest.values()), "habitual_platform": habitual}
