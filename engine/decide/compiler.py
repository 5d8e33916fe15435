"""Audience compiler: a playbook's audience tree → one SQLAlchemy Core SELECT.

Shape (see ../shared/sql-notes.md): every per-member order metric the playbook needs
comes from ONE aggregation over paid orders (conditional aggregates for windows, a
window function for the habitual platform), joined to `members` by primary key; leaves
on order lines, tags, events and coupons are EXISTS subqueries on indexed base tables.
Local calendar windows are turned into UTC bounds in Python, once, and bound as
parameters; no column name is ever taken from YAML text. "Why" facts are correlated
scalar subqueries in the SELECT list, so they are computed only for audience rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from engine.clock import day_start, local_date, utc
from engine.grammar import audience as a
from engine.grammar.playbook import Playbook
from engine.store.reachability import reach_columns, reachable
from engine.store.schema import (
    REACHING_STATES,
    coupons,
    events,
    member_tags,
    members,
    order_items,
    orders,
    touches,
)

FEN_PER_YUAN = 100
WIDEST_CANDIDATE_WINDOW_DAYS = 14
"""A purchase window wider than this does not drive the audience (see _Compiler.candidates)."""


@dataclass(frozen=True)
class Frame:
    """One evaluation: the instant, the playbook timezone, and its local 'today'."""

    at: datetime
    tz: ZoneInfo
    dialect: str

    @property
    def at_utc(self) -> datetime:
        return utc(self.at)

    @property
    def today(self) -> date:
        return local_date(self.at, self.tz)

    def day_start(self, days_ago: int) -> datetime:
        """UTC start of the local date `days_ago` days before today (negative: after)."""
        return day_start(self.today - timedelta(days=days_ago), self.tz)

    def bounds(self, window: a.Window) -> tuple[datetime, datetime] | None:
        """[start, end) in UTC covering the window's local dates, or None for no window."""
        days = window.day_range()
        if days is None:
            return None
        near, far = days
        return self.day_start(far), self.day_start(near - 1)


def _in_bounds(column: Any, bounds: tuple[datetime, datetime] | None) -> ColumnElement[bool]:
    if bounds is None:
        return true()
    return and_(column >= bounds[0], column < bounds[1])


def text_of_json(column: Any, key: str, dialect: str) -> ColumnElement[str]:
    """A scalar event attribute's JSON value as text: `true`, `12`, `x` for "x".

    NULL when absent, null, an array or an object: the two databases spell nested JSON
    differently, so `where` compares scalars only and the same playbook picks the same
    members on both. PostgreSQL's `->>` spells scalars this way; SQLite's json_extract gives
    1/0 for booleans, so booleans are spelled out from json_type.
    """
    if dialect == "postgresql":
        nested = func.jsonb_typeof(column[key]).in_(["object", "array"])
        return case((nested, literal(None, String)), else_=column[key].as_string())
    path = '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    kind = func.json_type(column, path)
    return case(
        (kind == "true", literal("true")),
        (kind == "false", literal("false")),
        (kind.in_(["null", "object", "array"]), literal(None, String)),
        else_=cast(func.json_extract(column, path), String),
    )


def byte_order(column: ColumnElement[str], dialect: str) -> ColumnElement[str]:
    """`column` ordered by bytes (PostgreSQL's default collation may be linguistic)."""
    return column.collate("C") if dialect == "postgresql" else column


def compare(column: Any, ops: a._Ops, scale: Any = None) -> ColumnElement[bool]:
    """Two-valued comparison of `column` (NULL → false); `scale(v)` converts YAML values."""
    conv = scale or (lambda v: v)
    parts: list[ColumnElement[bool]] = []
    for op, value in ops.operators():
        if op == "eq":
            parts.append(column == conv(value))
        elif op == "ne":
            parts.append(column != conv(value))
        elif op == "gt":
            parts.append(column > conv(value))
        elif op == "gte":
            parts.append(column >= conv(value))
        elif op == "lt":
            parts.append(column < conv(value))
        elif op == "lte":
            parts.append(column <= conv(value))
        elif op == "in":
            parts.append(column.in_([conv(v) for v in value]))
        elif op == "not_in":
            parts.append(column.not_in([conv(v) for v in value]))
        elif op == "between":
            parts.append(column.between(conv(value[0]), conv(value[1])))
    return and_(column.is_not(None), *parts)


def _fen(value: Decimal) -> int:
    return int(value * FEN_PER_YUAN)


def _average_compare(total: Any, count: Any, ops: a._Ops) -> ColumnElement[bool]:
    """avg op X ⇔ total op X·count (count > 0): exact, no division, no rounding."""
    parts: list[ColumnElement[bool]] = [count > 0]
    for op, value in ops.operators():
        if op == "between":
            parts.append(and_(total >= _fen(value[0]) * count, total <= _fen(value[1]) * count))
        elif op in ("in", "not_in"):
            any_eq = or_(*(total == _fen(v) * count for v in value))
            parts.append(any_eq if op == "in" else not_(any_eq))
        else:
            scaled = _fen(value) * count
            parts.append({"eq": total == scaled, "ne": total != scaled, "gt": total > scaled,
                          "gte": total >= scaled, "lt": total < scaled, "lte": total <= scaled}[op])
    return and_(*parts)


@dataclass
class CompiledLeaf:
    """One leaf: its label, its SQL truth value, and the fact shown in `why`."""

    label: str
    leaf: Any
    predicate: ColumnElement[bool]
    fact: ColumnElement[Any] | None


@dataclass
class CompiledAudience:
    """The compiled SELECT and what its columns mean."""

    statement: Select[Any]
    leaves: list[CompiledLeaf]
    fact_labels: dict[str, str] = field(default_factory=dict)  # column key → leaf label
    channels: list[str] = field(default_factory=list)
    event_mode: bool = False


def leaf_label(leaf: Any) -> str:
    """A short human label for a leaf, e.g. `last_purchase(category=pet_milk, days_ago=21)`."""
    kind, arg = leaf.kind, leaf.arg
    if kind in ("purchased", "last_purchase"):
        return f"{kind}({arg.describe()})"
    if kind in ("order_count", "total_spend", "avg_order_value"):
        window = "" if not arg.has_window() else f"{arg.describe_window()}, "
        return f"{kind}({window}{arg.describe()})"
    if kind == "member":
        return "member(" + ", ".join(f"{name} {ops.describe()}" for name, ops in arg.fields()) + ")"
    if kind == "tag":
        return f"tag({arg})"
    if kind == "event":
        where = "".join(f", {k}={v}" for k, v in (arg.where or {}).items())
        return f"event(type={arg.type}, {arg.describe_window()}{where})"
    if kind == "coupon_expiring":
        return f"coupon_expiring(within_days={arg.within_days})"
    if kind == "points_expiring":
        return f"points_expiring(within_days={arg.within_days}, min_points={arg.min_points})"
    if kind == "reachable":
        return f"reachable({', '.join(leaf.channels())})"
    if kind == "triggering_order":
        return f"triggering_order(paid={str(arg.paid).lower()})"
    return str(kind)


def paid_by(o: FromClause, at: datetime) -> ColumnElement[bool]:
    """A paid, not refunded order whose payment happened at or before `at`."""
    return and_(o.c.status == "paid", o.c.paid_at.is_not(None), o.c.paid_at <= at)


class _Compiler:
    """Builds one playbook's statement for one Frame. One instance per compilation."""

    def __init__(self, playbook: Playbook, frame: Frame) -> None:
        self.playbook = playbook
        self.frame = frame
        self.at = frame.at_utc
        self.m = members
        self.event_mode = playbook.is_event_triggered
        self.windows: dict[tuple[int, int] | None, int] = {}
        for leaf in a.walk_leaves(playbook.audience):
            if leaf.kind in ("order_count", "total_spend", "avg_order_value"):
                self.windows.setdefault(leaf.arg.day_range(), len(self.windows))
        self.leaves: list[CompiledLeaf] = []
        self.driving: Any = None  # the leaf whose candidates the statement starts from

    # -- the one per-member aggregation --------------------------------------------------------
    def stats(self, restrict: Any = None) -> FromClause:
        o = orders
        paid = paid_by(o, self.at)
        per_platform: list[Any] = [
            o.c.member_id, o.c.platform.label("platform"),
            func.count().label("n"), func.sum(o.c.amount_fen).label("fen"),
            func.max(o.c.paid_at).label("last_paid_at"),
        ]
        for days, i in self.windows.items():
            if days is None:
                continue
            inside = _in_bounds(o.c.paid_at, (self.frame.day_start(days[1]), self.frame.day_start(days[0] - 1)))
            per_platform.append(func.sum(case((inside, 1), else_=0)).label(f"n_{i}"))
            per_platform.append(func.sum(case((inside, o.c.amount_fen), else_=0)).label(f"fen_{i}"))
        where = [paid] if restrict is None else [paid, o.c.member_id.in_(restrict)]
        stage1 = select(*per_platform).where(*where).group_by(o.c.member_id, o.c.platform).subquery("per_platform")
        ranked = select(stage1, func.row_number().over(
            partition_by=stage1.c.member_id,
            order_by=(stage1.c.n.desc(), stage1.c.last_paid_at.desc(),
                      byte_order(stage1.c.platform, self.frame.dialect).asc().nulls_last()),
        ).label("platform_rank")).subquery("ranked")
        # One GROUP BY sums the platforms' rows and picks the top-ranked platform; it also lets
        # SQLite build an automatic index on the materialised result (without it the join to
        # members is a nested loop). One window function, not one per total.
        totals: list[Any] = [
            func.max(case((ranked.c.platform_rank == 1, ranked.c.platform))).label("habitual_platform"),
            func.sum(ranked.c.n).label("order_count"),
            func.sum(ranked.c.fen).label("total_fen"),
            func.max(ranked.c.last_paid_at).label("last_purchase_at"),
        ]
        for days, i in self.windows.items():
            if days is not None:
                totals += [func.sum(ranked.c[f"n_{i}"]).label(f"n_{i}"), func.sum(ranked.c[f"fen_{i}"]).label(f"fen_{i}")]
        return select(ranked.c.member_id, *totals).group_by(ranked.c.member_id).subquery("stats")

    def _window_columns(self, stats: FromClause, days: tuple[int, int] | None) -> tuple[Any, Any]:
        if days is None:
            return func.coalesce(stats.c.order_count, 0), func.coalesce(stats.c.total_fen, 0)
        i = self.windows[days]
        return func.coalesce(stats.c[f"n_{i}"], 0), func.coalesce(stats.c[f"fen_{i}"], 0)

    # -- leaves -------------------------------------------------------------------------------
    def _matching_lines(self, f: a.PurchaseFilter, o: Any = None) -> tuple[FromClause, list[ColumnElement[bool]], Any]:
        """The member's paid order lines matching `f`: (FROM, conditions, the paid_at column).
        Given the orders alias `o`, every member's lines (not correlated to the member row)."""
        correlated = o is None
        o = orders.alias("o") if o is None else o
        source: FromClause = o
        conditions = [paid_by(o, self.at)]
        if correlated:
            conditions.insert(0, o.c.member_id == self.m.c.member_id)
        if f.platform is not None:
            conditions.append(o.c.platform == f.platform)
        if f.category is not None or f.sku is not None or f.trial is not None:
            i = order_items.alias("i" if correlated else f"{o.name}_items")
            source = o.join(i, i.c.order_id == o.c.order_id)
            if f.category is not None:
                conditions.append(i.c.category == f.category)
            if f.sku is not None:
                conditions.append(i.c.sku == f.sku)
            if f.trial is not None:
                conditions.append(i.c.trial.is_(true() if f.trial else false()))
        return source, conditions, o.c.paid_at

    def leaf(self, leaf: Any, stats: FromClause, event_row: FromClause | None) -> CompiledLeaf:
        """Compile one leaf: its two-valued predicate and its `why` fact."""
        method = getattr(self, f"_leaf_{leaf.kind}")
        predicate, fact = method(leaf, stats, event_row)
        if leaf is self.driving:
            predicate = self._beyond_candidates(leaf, predicate)
        return CompiledLeaf(leaf_label(leaf), leaf, predicate, fact)

    def _purchase(self, f: a.PurchaseFilter, last: bool) -> tuple[ColumnElement[bool], Any]:
        source, conditions, paid_at = self._matching_lines(f)
        bounds = self.frame.bounds(f)
        in_window = exists().select_from(source).where(*conditions, _in_bounds(paid_at, bounds))
        if not last:
            fact = select(func.max(paid_at)).select_from(source).where(
                *conditions, _in_bounds(paid_at, bounds)).scalar_subquery()
            return in_window, fact
        assert bounds is not None
        # The most recent matching purchase is in the window ⇔ one is, and none is newer.
        newer = exists().select_from(source).where(*conditions, paid_at >= bounds[1])
        fact = select(func.max(paid_at)).select_from(source).where(*conditions).scalar_subquery()
        return and_(in_window, not_(newer)), fact

    def _leaf_purchased(self, leaf: a.Purchased, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        return self._purchase(leaf.purchased, last=False)

    def _leaf_last_purchase(self, leaf: a.LastPurchase, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        f = leaf.last_purchase
        if not _filters_lines(f):
            # any paid order: the aggregation already holds the latest one
            return _in_bounds(stats.c.last_purchase_at, self.frame.bounds(f)), stats.c.last_purchase_at
        return self._purchase(f, last=True)

    def _leaf_order_count(self, leaf: a.OrderCount, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        count, _ = self._window_columns(stats, leaf.order_count.day_range())
        return compare(count, leaf.order_count), count

    def _leaf_total_spend(self, leaf: a.TotalSpend, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        _, total = self._window_columns(stats, leaf.total_spend.day_range())
        return compare(total, leaf.total_spend, _fen), total

    def _leaf_avg_order_value(self, leaf: a.AvgOrderValue, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        count, total = self._window_columns(stats, leaf.avg_order_value.day_range())
        average = case((count > 0, total * literal(1.0) / count), else_=None)
        return _average_compare(total, count, leaf.avg_order_value), average

    def _leaf_member(self, leaf: a.Member, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        parts = []
        for name, ops in leaf.member.fields():
            if name == "habitual_platform":
                parts.append(compare(stats.c.habitual_platform, ops))
            elif name == "joined_days_ago":
                parts.append(self._joined_days_ago(ops))
            else:
                parts.append(compare(self.m.c[name], ops))
        return and_(*parts), None

    def _leaf_tag(self, leaf: a.HasTag, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        t = member_tags.alias("t")
        return exists().where(t.c.member_id == self.m.c.member_id, t.c.tag == leaf.tag), None

    def _events_matching(self, e: FromClause, f: a.EventFilter) -> list[ColumnElement[bool]]:
        conditions = [e.c.type == f.type, e.c.occurred_at <= self.at, _in_bounds(e.c.occurred_at, self.frame.bounds(f))]
        for key, value in (f.where or {}).items():
            conditions.append(text_of_json(e.c.attributes, key, self.frame.dialect) == value)
        return conditions

    def _leaf_event(self, leaf: a.HadEvent, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        e = events.alias("e")
        conditions = [e.c.member_id == self.m.c.member_id, *self._events_matching(e, leaf.event)]
        return exists().where(*conditions), select(func.max(e.c.occurred_at)).where(*conditions).scalar_subquery()

    def _live_coupons(self, c: FromClause, f: a.CouponExpiring) -> list[ColumnElement[bool]]:
        """Issued, unredeemed coupons in `c` that expire after now and within `f`'s days."""
        return [or_(c.c.issued_at.is_(None), c.c.issued_at <= self.at),
                or_(c.c.redeemed_at.is_(None), c.c.redeemed_at > self.at),
                c.c.expires_at > self.at,
                c.c.expires_at < self.frame.day_start(-f.within_days - 1)]

    def _leaf_coupon_expiring(self, leaf: a.HasCouponExpiring, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        c = coupons.alias("c")
        conditions = [c.c.member_id == self.m.c.member_id, *self._live_coupons(c, leaf.coupon_expiring)]
        return exists().where(*conditions), select(func.min(c.c.expires_at)).where(*conditions).scalar_subquery()

    def _points_expiring(self, m: FromClause, f: a.PointsExpiring) -> ColumnElement[bool]:
        return and_(m.c.points_expiring.is_not(None), m.c.points_expiring >= f.min_points,
                    m.c.points_expire_at.is_not(None), m.c.points_expire_at >= self.frame.day_start(0),
                    m.c.points_expire_at < self.frame.day_start(-f.within_days - 1))

    def _leaf_points_expiring(self, leaf: a.HasPointsExpiring, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        return self._points_expiring(self.m, leaf.points_expiring), self.m.c.points_expire_at

    def _leaf_reachable(self, leaf: a.Reachable, stats: FromClause, event_row: Any) -> tuple[Any, Any]:
        return or_(*(reachable(ch, self.m) for ch in leaf.channels())), None

    def _leaf_triggering_order(self, leaf: a.TriggeringOrderLeaf, stats: FromClause,
                               event_row: FromClause | None) -> tuple[Any, Any]:
        assert event_row is not None, "triggering_order needs an event trigger"
        o = orders.alias("t_o")
        order_id = text_of_json(event_row.c.attributes, "order_id", self.frame.dialect)
        paid = and_(o.c.paid_at.is_not(None), o.c.paid_at <= self.at, o.c.status != "created")
        predicate = exists().where(o.c.order_id == order_id, o.c.member_id == self.m.c.member_id,
                                   paid if leaf.triggering_order.paid else not_(paid))
        return predicate, select(o.c.status).where(o.c.order_id == order_id).scalar_subquery()

    def _joined_days_ago(self, ops: a._Ops) -> ColumnElement[bool]:
        """joined_days_ago op N, as bounds on joined_at (local join date vs local today)."""
        joined = self.m.c.joined_at
        day = self.frame.day_start

        def on(n: int) -> ColumnElement[bool]:  # the local join date is today − n
            return and_(joined >= day(n), joined < day(n - 1))

        def at_least(n: int) -> ColumnElement[bool]:  # joined n or more days ago
            return joined < day(n - 1)

        def at_most(n: int) -> ColumnElement[bool]:
            return joined >= day(n)

        build: dict[str, Any] = {
            "eq": on, "ne": lambda n: not_(on(n)),
            "gt": lambda n: at_least(n + 1), "gte": at_least, "lt": lambda n: at_most(n - 1), "lte": at_most,
            "in": lambda ns: or_(*(on(n) for n in ns)), "not_in": lambda ns: and_(*(not_(on(n)) for n in ns)),
            "between": lambda ab: and_(at_least(ab[0]), at_most(ab[1])),
        }
        return and_(joined.is_not(None), *(build[op](value) for op, value in ops.operators()))

    # -- who can match at all ------------------------------------------------------------------
    def candidates(self, audience: a.Group) -> Select[Any] | None:
        """The member ids that one necessary condition admits (a leaf of the top-level `all`),
        read from an index: the day's orders by paid_at, coupons by expires_at, events by type
        and time, points by expiry, a tag. The per-member aggregation and every other check then
        run for those members only, not for all of them (sql-notes: drive from the selective
        side). None when no such leaf can say: the audience is judged over every member."""
        found = [(option, leaf) for leaf in (audience.all or []) if not isinstance(leaf, a.Group)
                 for option in [self._candidates_of(leaf)] if option is not None]
        if not found:
            return None
        (_, chosen), self.driving = min(found, key=lambda item: item[0][0])
        return chosen

    def _beyond_candidates(self, leaf: Any, predicate: ColumnElement[bool]) -> ColumnElement[bool]:
        """What the driving leaf still has to check of a member its candidates admitted. Saying a
        condition twice would make the planner square its selectivity, expect a handful of rows
        and pick a nested loop that reruns the aggregation for each (minutes, not seconds)."""
        if leaf.kind == "last_purchase" and not _filters_lines(leaf.arg):
            return predicate  # on the aggregation's latest purchase: not said twice
        return true()  # the candidates are exactly the members the leaf admits

    def _candidates_of(self, leaf: Any) -> tuple[int, Select[Any]] | None:
        """(how selective it usually is: lower is narrower, the candidates) for one leaf, or None."""
        if leaf.kind in ("purchased", "last_purchase"):
            f = leaf.arg
            bounds = self.frame.bounds(f)
            if bounds is None:
                return None
            o = orders.alias("candidate_orders")
            source, conditions, paid_at = self._matching_lines(f, o)
            near, far = f.day_range()
            if far - near > WIDEST_CANDIDATE_WINDOW_DAYS:
                return None  # months of orders admit much of the base: one pass over all is cheaper
            conditions.append(_in_bounds(paid_at, bounds))
            if leaf.kind == "last_purchase" and _filters_lines(f):
                # ... and none of the member's matching purchases is newer: the candidates are then
                # exactly the leaf's members, and the aggregation runs for those only.
                n = orders.alias("newer_orders")
                newer_source, newer_conditions, newer_paid_at = self._matching_lines(f, n)
                conditions.append(not_(exists().select_from(newer_source).where(
                    n.c.member_id == o.c.member_id, *newer_conditions, newer_paid_at >= bounds[1])))
            return (0 if far - near < 7 else 2), select(o.c.member_id).select_from(source).where(*conditions)
        if leaf.kind == "coupon_expiring":
            c = coupons.alias("candidate_coupons")
            return 0, select(c.c.member_id).where(*self._live_coupons(c, leaf.arg))
        if leaf.kind == "event" and self.frame.bounds(leaf.arg) is not None:
            e = events.alias("candidate_events")
            return 1, select(e.c.member_id).where(*self._events_matching(e, leaf.arg))
        if leaf.kind == "points_expiring":
            m = members.alias("candidate_members")
            return 3, select(m.c.member_id).where(self._points_expiring(m, leaf.arg))
        if leaf.kind == "tag":
            t = member_tags.alias("candidate_tags")
            return 4, select(t.c.member_id).where(t.c.tag == leaf.arg)
        return None

    # -- the tree -----------------------------------------------------------------------------
    def condition(self, node: Any, stats: FromClause, event_row: FromClause | None) -> ColumnElement[bool]:
        if isinstance(node, a.Group):
            parts: list[ColumnElement[bool]] = []
            for kind, items in node.parts():
                compiled = [self.condition(item, stats, event_row) for item in items]
                if kind == "all":
                    parts.append(and_(true(), *compiled))
                elif kind == "any":
                    parts.append(or_(false(), *compiled))
                else:
                    parts.append(not_(or_(false(), *compiled)))
            return and_(true(), *parts)
        compiled_leaf = self.leaf(node, stats, event_row)
        self.leaves.append(compiled_leaf)
        return compiled_leaf.predicate


def _filters_lines(f: a.PurchaseFilter) -> bool:
    """Whether `f` picks some order lines (category, sku, platform, trial) rather than any paid order."""
    return any(getattr(f, k) is not None for k in ("category", "sku", "platform", "trial"))


def _tags(dialect: str) -> Any:
    t = member_tags.alias("tags")
    joined = func.string_agg(t.c.tag, "|") if dialect == "postgresql" else func.group_concat(t.c.tag, "|")
    return select(joined).where(t.c.member_id == members.c.member_id).scalar_subquery()


def event_bounds(playbook: Playbook, at: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """Events whose `occurred_at + delay` is in (at − window, at]: their occurred_at bounds (lo, hi]."""
    delay = playbook.trigger.delay_td
    return utc(at) - window - delay, utc(at) - delay


def _cooldown(playbook: Playbook, frame: Frame, m: FromClause) -> ColumnElement[bool]:
    """Sent or held out by this playbook on the last `cooldown_days` local days (ledger rows)."""
    days = playbook.limits.cooldown_days or 0
    if days == 0:
        return false()
    t = touches.alias("cooldown")
    return exists().where(t.c.playbook == playbook.id, t.c.member_id == m.c.member_id,
                          t.c.state.in_(("holdout", *REACHING_STATES)),
                          t.c.touch_at >= frame.day_start(days - 1))


def _undecided(playbook: Playbook, m: FromClause, occurrence: Any) -> ColumnElement[bool]:
    """No ledger row yet for (playbook, member, occurrence): a resumed run skips what it decided."""
    t = touches.alias("decided")
    return not_(exists().where(t.c.playbook == playbook.id, t.c.member_id == m.c.member_id,
                               t.c.occurrence == occurrence))


def _due_events(playbook: Playbook, frame: Frame, event_row: FromClause, window: timedelta | None,
                explain_event: str | None) -> list[ColumnElement[bool]]:
    """The trigger's events: its type, due in the window (if any), or the one being explained."""
    due = [event_row.c.type == playbook.trigger.event]
    if explain_event is not None:
        due.append(event_row.c.event_id == explain_event)
    if window is not None:
        lo, hi = event_bounds(playbook, frame.at, window)
        due += [event_row.c.occurred_at > lo, event_row.c.occurred_at <= hi]
    return due


def compile_audience(playbook: Playbook, frame: Frame, *, event_window: timedelta | None = None,
                     explain_member: str | None = None, explain_event: str | None = None,
                     skip_decided: str | None = None) -> CompiledAudience:
    """Compile `playbook`'s audience as of `frame` into one SELECT.

    Scheduled playbooks: one row per matching member, in member_id byte order.
    Event-triggered playbooks: one row per due event (occurred_at + delay in
    (at − event_window, at]) whose member matches, in occurred_at order.
    With `explain_member` the audience predicate is not applied: the statement returns that
    member's row(s) with a `leaf_<i>` truth column per leaf, for `siyu explain`.
    With `skip_decided` (the occurrence key of a scheduled run; for event playbooks any
    value: each event is its own occurrence), members that already have a ledger row for
    that occurrence are left out: what `tick` and the daemon evaluate. The dry-run keeps them.
    """
    compiler = _Compiler(playbook, frame)
    m = members
    event_row = events.alias("trigger_event") if playbook.is_event_triggered else None
    restrict: Any = None
    event_filters: list[ColumnElement[bool]] = []
    if event_row is not None:
        event_filters = _due_events(playbook, frame, event_row, event_window, explain_event)
        restrict = select(event_row.c.member_id).where(*event_filters)
    candidates: Any = None
    if explain_member is not None:
        restrict = [explain_member]
    elif event_row is None:
        chosen = compiler.candidates(playbook.audience)
        if chosen is not None:
            # Named once and read twice (the aggregation's members, the statement's rows), and
            # the statement driven from it, as an expert writes it.
            candidates = chosen.distinct().cte("candidates")
            restrict = select(candidates.c.member_id)
    stats = compiler.stats(restrict)
    predicate = compiler.condition(playbook.audience, stats, event_row)

    columns: list[Any] = [*m.c, _tags(frame.dialect).label("tags"),
                          stats.c.order_count, stats.c.total_fen, stats.c.last_purchase_at,
                          stats.c.habitual_platform]
    channels = [step.channel for step in playbook.channels]
    columns += reach_columns(m, channels)
    columns.append(case((_cooldown(playbook, frame, m), 1), else_=0).label("in_cooldown"))
    fact_labels: dict[str, str] = {}
    for i, compiled_leaf in enumerate(compiler.leaves):
        if compiled_leaf.fact is not None:
            fact_labels[f"fact_{i}"] = compiled_leaf.label
            columns.append(compiled_leaf.fact.label(f"fact_{i}"))
        if explain_member is not None:
            columns.append(case((compiled_leaf.predicate, 1), else_=0).label(f"leaf_{i}"))
    if explain_member is not None:
        columns.append(case((predicate, 1), else_=0).label("matched"))

    source: FromClause
    if event_row is not None:
        columns += [event_row.c.event_id, event_row.c.type.label("event_type"),
                    event_row.c.occurred_at.label("event_occurred_at"),
                    event_row.c.attributes.label("event_attributes")]
        source = event_row.join(m, m.c.member_id == event_row.c.member_id)
        order = [event_row.c.occurred_at, byte_order(event_row.c.event_id, frame.dialect)]
    elif candidates is not None:
        # Driven from the candidates, as an expert writes it: a join the planner sizes from the
        # candidates' own estimate (an IN over a CTE left PostgreSQL guessing, and nested-looping).
        source = m.join(candidates, candidates.c.member_id == m.c.member_id)
        order = [byte_order(m.c.member_id, frame.dialect)]
    else:
        source = m
        order = [byte_order(m.c.member_id, frame.dialect)]
    source = source.outerjoin(stats, stats.c.member_id == m.c.member_id)
    where: list[ColumnElement[bool]] = list(event_filters)
    if explain_member is not None:
        where.append(m.c.member_id == explain_member)
    else:
        where.append(predicate)
    if skip_decided is not None:
        where.append(_undecided(playbook, m, event_row.c.event_id if event_row is not None else skip_decided))
    statement = select(*columns).select_from(source).where(*where).order_by(*order)
    return CompiledAudience(statement, compiler.leaves, fact_labels, channels, event_row is not None)
