"""Test-data builder for audience and decision scenarios: members, orders, coupons, events, playbooks.

Rows go in with SQLAlchemy Core through the engine/store/schema.py tables: aware datetimes,
money given in yuan and stored as integer fen. Every scenario is evaluated as of `AT`
(Sunday 2026-11-22 10:00 Shanghai) unless it says otherwise, so "21 days ago" is the
local date 2026-11-01.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Iterable, Mapping
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, insert

from engine.decide.decisions import Decision
from engine.decide.preview import dry_run
from engine.grammar.loader import load_text
from engine.grammar.playbook import Playbook
from engine.grammar.values import MEMBER_FIELDS
from engine.store.schema import coupons, events, member_tags, members, order_items, orders

SHANGHAI = ZoneInfo("Asia/Shanghai")
AT = datetime(2026, 11, 22, 10, 0, tzinfo=SHANGHAI)
"""The evaluation instant of every scenario that does not name another."""
PHONE = "13800000000"

_ids = itertools.count(1)
Item = tuple[str, str, bool]
"""An order line: (category, sku, trial)."""


def local(text: str) -> datetime:
    """'2026-11-01 23:30' → that wall-clock time in Shanghai."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def days_ago(n: int, clock: str = "12:00", at: datetime = AT) -> datetime:
    """`clock` (HH:MM, Shanghai) on the local date `n` days before `at`'s local date (negative: after)."""
    day = at.astimezone(SHANGHAI).date() - timedelta(days=n)
    return datetime.combine(day, time.fromisoformat(clock), tzinfo=SHANGHAI)


def fen(yuan: str | int | Decimal) -> int:
    """Yuan → integer fen, exactly ('199.99' → 19999)."""
    value = Decimal(str(yuan)) * 100
    assert value == value.to_integral_value(), f"{yuan} is not a whole number of fen"
    return int(value)


# --------------------------------------------------------------------------- rows

def add_member(conn: Connection, member_id: str, *, tags: Iterable[str] = (), **fields: Any) -> str:
    """Insert a member (any `members` column as a keyword) and its tags; returns the id."""
    unknown = set(fields) - set(MEMBER_FIELDS)
    assert not unknown, f"not member columns: {sorted(unknown)}"
    conn.execute(insert(members).values(member_id=member_id, **fields))
    for tag in tags:
        conn.execute(insert(member_tags).values(member_id=member_id, tag=tag))
    return member_id


def add_order(conn: Connection, member: str, *, paid_at: datetime | None, amount_yuan: str | int = "100",
              platform: str = "tmall", items: Iterable[Item] = (), status: str = "paid",
              order_id: str | None = None, created_at: datetime | None = None) -> str:
    """Insert an order with its lines; `paid_at` None with status `created` is an unpaid order."""
    order_id = order_id or f"O{next(_ids)}"
    created = created_at or (paid_at - timedelta(minutes=5) if paid_at is not None else AT - timedelta(hours=1))
    conn.execute(insert(orders).values(order_id=order_id, member_id=member, platform=platform, created_at=created,
                                       paid_at=paid_at, amount_fen=fen(amount_yuan), status=status))
    for line_no, (category, sku, trial) in enumerate(items, start=1):
        conn.execute(insert(order_items).values(order_id=order_id, line_no=line_no, sku=sku, category=category,
                                                quantity=1, amount_fen=None, trial=trial))
    return order_id


def add_coupon(conn: Connection, member: str, *, expires_at: datetime, issued_at: datetime | None = None,
               redeemed_at: datetime | None = None, threshold_yuan: int = 250, discount_yuan: int = 50) -> str:
    """Insert a coupon (issued a week before `AT` unless told)."""
    coupon_id = f"C{next(_ids)}"
    conn.execute(insert(coupons).values(
        coupon_id=coupon_id, member_id=member, threshold_fen=fen(threshold_yuan), discount_fen=fen(discount_yuan),
        issued_at=issued_at or AT - timedelta(days=7), expires_at=expires_at, redeemed_at=redeemed_at))
    return coupon_id


def add_event(conn: Connection, member: str, type: str, occurred_at: datetime,
              attributes: Mapping[str, Any] | None = None, *, event_id: str | None = None) -> str:
    """Insert an event with JSON attributes."""
    event_id = event_id or f"E{next(_ids)}"
    conn.execute(insert(events).values(event_id=event_id, member_id=member, type=type, occurred_at=occurred_at,
                                       attributes=dict(attributes or {})))
    return event_id


# --------------------------------------------------------------------------- playbooks

def _indent(text: str, spaces: int) -> str:
    return textwrap.indent(textwrap.dedent(text).strip(), " " * spaces)


def playbook(yaml_text: str) -> Playbook:
    """A playbook from its YAML text (dedented), validated exactly as `siyu check` does."""
    loaded, _ = load_text(textwrap.dedent(yaml_text).strip() + "\n", "scenario.yaml")
    return loaded


def audience_playbook(audience_yaml: str, *, timezone: str | None = None) -> Playbook:
    """A scheduled SMS playbook around `audience_yaml` (the body under `audience:`)."""
    lines = ["id: scenario", "name: 测试场景"]
    if timezone is not None:
        lines.append(f"timezone: {timezone}")
    lines += ['trigger: {schedule: "0 10 * * *"}', "audience:", _indent(audience_yaml, 2),
              "channels:", "  - sms: {template_code: SMS_1}"]
    return playbook("\n".join(lines))


def decide(db: Engine, book: Playbook, at: datetime = AT, *, links: Mapping[str, str] | None = None,
           event_window: timedelta = timedelta(hours=1)) -> list[Decision]:
    """The dry-run's decisions for one playbook as of `at`, in the order it yields them."""
    return list(dry_run(db, [book], at, default_timezone="Asia/Shanghai", links=links or {},
                        event_window=event_window))


def by_member(decisions: Iterable[Decision]) -> dict[str, Decision]:
    """Decisions of a scheduled playbook keyed by member id (one each)."""
    out: dict[str, Decision] = {}
    for d in decisions:
        assert d.member_id not in out, f"{d.member_id} decided twice"
        out[d.member_id] = d
    return out


def matching(db: Engine, audience_yaml: str, at: datetime = AT, *, timezone: str | None = None) -> set[str]:
    """The member ids in the audience of `audience_yaml` as of `at` (playbook timezone: Shanghai unless given)."""
    decisions = decide(db, audience_playbook(audience_yaml, timezone=timezone), at)
    ids = [d.member_id for d in decisions]
    assert len(ids) == len(set(ids)), f"a member appears twice: {ids}"
    return set(ids)
