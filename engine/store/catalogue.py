"""The catalogue: which data values the store holds (tags, categories, tiers, …), with member counts.

`siyu values` prints it and `siyu check --db` compares playbooks against it. Every count is one
GROUP BY: tags, categories, skus and event types read their indexes (`member_tags (tag, …)`,
`order_items (category|sku, order_id)`, `events (type, occurred_at)`); tiers, cities and platforms
scan `members` once each. Categories, skus and platforms count distinct members over their order
lines, the costliest: measured on SQLite with the demo brand at 100,000 members (825,000 orders),
the whole catalogue takes about 2 s, so seconds (not minutes) at a million.

Event attribute names and values are read from a bounded sample: the latest `EVENT_SAMPLE` events
of each type (the `(type, occurred_at)` index), in Python. That is one query shape for SQLite and
PostgreSQL, whose JSON functions differ (no `jsonb_object_keys` on SQLite, no `json_each` on
PostgreSQL); attribute names are the events' schema and the latest events show it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, desc, func, select, union

from engine.store.schema import events, member_tags, members, order_items, orders

EVENT_SAMPLE = 1000
"""Events read per type for attribute names and values (the most recent ones)."""

KINDS = ("tags", "categories", "skus", "tiers", "cities", "platforms", "events")
"""What `siyu values` can list, in this order."""


@dataclass(frozen=True)
class EventType:
    """One event type: its members, and the attribute names and values in its latest events."""

    members: int
    attributes: dict[str, dict[str, int]] = field(default_factory=dict)
    """Attribute name → {value as `where` compares it (JSON text) → events of the sample}."""
    sampled: bool = False
    """True when the type has more events than were read: absent values may still occur."""


@dataclass(frozen=True)
class Catalogue:
    """The distinct data values, each with how many members have it."""

    tags: dict[str, int]
    categories: dict[str, int]
    skus: dict[str, int]
    tiers: dict[str, int]
    cities: dict[str, int]
    platforms: dict[str, int]
    """Platforms of orders and members' origin platforms (a member counts once per platform)."""
    events: dict[str, EventType]


def _counts(engine: Engine, statement: Any) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    return {str(value): int(n) for value, n in sorted(rows, key=lambda r: (-r[1], str(r[0]))) if value is not None}


def tag_counts(engine: Engine) -> dict[str, int]:
    """Tag → members tagged."""
    t = member_tags
    return _counts(engine, select(t.c.tag, func.count()).group_by(t.c.tag))


def item_counts(engine: Engine, column: str) -> dict[str, int]:
    """Order-line `category` or `sku` → members with such a line (in any order, paid or not)."""
    item = order_items.c[column]
    joined = order_items.join(orders, orders.c.order_id == order_items.c.order_id)
    return _counts(engine, select(item, func.count(orders.c.member_id.distinct()))
                   .select_from(joined).where(item.is_not(None)).group_by(item))


def member_counts(engine: Engine, column: str) -> dict[str, int]:
    """A member column (`tier`, `city`) → members with that value."""
    col = members.c[column]
    return _counts(engine, select(col, func.count()).where(col.is_not(None)).group_by(col))


def platform_counts(engine: Engine) -> dict[str, int]:
    """Platform → members who ordered there or came from there."""
    both = union(
        select(orders.c.platform.label("platform"), orders.c.member_id.label("member_id"))
        .where(orders.c.platform.is_not(None)),
        select(members.c.origin_platform, members.c.member_id).where(members.c.origin_platform.is_not(None)),
    ).subquery("platforms")
    return _counts(engine, select(both.c.platform, func.count()).group_by(both.c.platform))


def json_text(value: Any) -> str | None:
    """An attribute value as `where` compares it: strings as themselves, scalars as JSON, else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None  # null, objects and arrays never equal a `where` value


def event_types(engine: Engine, sample: int = EVENT_SAMPLE) -> dict[str, EventType]:
    """Event type → members with it, and the attribute names/values of its latest `sample` events."""
    e = events
    with engine.connect() as conn:
        rows = conn.execute(select(e.c.type, func.count(e.c.member_id.distinct()), func.count())
                            .group_by(e.c.type)).all()
        out: dict[str, EventType] = {}
        for type_, n_members, n_events in sorted(rows, key=lambda r: (-r[1], r[0])):
            attributes: dict[str, dict[str, int]] = {}
            latest = (select(e.c.attributes).where(e.c.type == type_)
                      .order_by(desc(e.c.occurred_at)).limit(sample))
            for (document,) in conn.execute(latest):
                if isinstance(document, str):  # a driver that hands JSON back as text
                    document = json.loads(document)
                if not isinstance(document, dict):
                    continue
                for name, value in document.items():
                    values = attributes.setdefault(str(name), {})
                    text = json_text(value)
                    if text is not None:
                        values[text] = values.get(text, 0) + 1
            out[str(type_)] = EventType(int(n_members), attributes, sampled=n_events > sample)
    return out


def value_counts(engine: Engine, kind: str) -> dict[str, int]:
    """Value → members for one of `KINDS` other than events (`siyu values`)."""
    if kind == "tags":
        return tag_counts(engine)
    if kind == "platforms":
        return platform_counts(engine)
    if kind in ("categories", "skus"):
        return item_counts(engine, {"categories": "category", "skus": "sku"}[kind])
    return member_counts(engine, {"tiers": "tier", "cities": "city"}[kind])


def read_catalogue(engine: Engine) -> Catalogue:
    """Every distinct value the audience grammar can name, with member counts."""
    return Catalogue(
        tags=tag_counts(engine),
        categories=item_counts(engine, "category"),
        skus=item_counts(engine, "sku"),
        tiers=member_counts(engine, "tier"),
        cities=member_counts(engine, "city"),
        platforms=platform_counts(engine),
        events=event_types(engine),
    )

