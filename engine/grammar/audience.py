"""The audience grammar: a tree of all / any / none groups whose leaves are conditions.

Each leaf is a mapping with one key (the leaf name). Leaves are two-valued: a comparison
on an empty field is false. Days are local calendar days in the playbook's timezone.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeAlias, TypeVar, Union

from pydantic import Discriminator, Field, StrictBool, Tag, field_validator, model_validator

from engine.grammar.addresses import ChannelName
from engine.grammar.values import GrammarModel, Text

Days = Annotated[int, Field(ge=0, strict=True)]


# --------------------------------------------------------------------------- windows

class Window(GrammarModel):
    """Exactly one of `days_ago`, `within_days`, `between_days` (local calendar days)."""

    days_ago: Days | None = None
    """The local date exactly N days before the evaluation's local date."""
    within_days: Days | None = None
    """Local dates from today−N to today inclusive (N+1 dates), never after the evaluation time."""
    between_days: tuple[Days, Days] | None = None
    """Local dates from today−B to today−A inclusive, A ≤ B."""

    @model_validator(mode="after")
    def _one_window(self) -> Window:
        given = self.window_keys()
        if len(given) > 1:
            raise ValueError(f"give one window, not {' and '.join(given)}")
        if self.between_days is not None and self.between_days[0] > self.between_days[1]:
            a, b = self.between_days
            raise ValueError(f"between_days [{a}, {b}]: the first number must not exceed the second")
        return self

    def window_keys(self) -> list[str]:
        return [k for k in ("days_ago", "within_days", "between_days") if getattr(self, k) is not None]

    def has_window(self) -> bool:
        return bool(self.window_keys())

    def day_range(self) -> tuple[int, int] | None:
        """(nearest, farthest) days ago covered by the window, or None without one."""
        if self.days_ago is not None:
            return self.days_ago, self.days_ago
        if self.within_days is not None:
            return 0, self.within_days
        if self.between_days is not None:
            return self.between_days
        return None

    def describe_window(self) -> str:
        if self.days_ago is not None:
            return f"days_ago={self.days_ago}"
        if self.within_days is not None:
            return f"within_days={self.within_days}"
        if self.between_days is not None:
            return f"between_days={list(self.between_days)}"
        return "ever"


class RequiredWindow(Window):
    @model_validator(mode="after")
    def _needs_window(self) -> RequiredWindow:
        if not self.has_window():
            raise ValueError("needs a window: days_ago, within_days or between_days")
        return self


# --------------------------------------------------------------------------- comparisons

V = TypeVar("V")
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "between")


class _Ops(GrammarModel):
    @model_validator(mode="after")
    def _some_operator(self) -> _Ops:
        if not self.operators():
            raise ValueError(f"needs a comparison: one of {', '.join(OPERATORS)}")
        for name, value in self.operators():
            if name == "between" and value[0] > value[1]:
                raise ValueError(f"between [{value[0]}, {value[1]}]: the first value must not exceed the second")
            if name in ("in", "not_in") and not value:
                raise ValueError(f"{name} needs at least one value")
        return self

    def operators(self) -> list[tuple[str, Any]]:
        """The (operator, value) pairs given, in grammar order."""
        out = []
        for name in OPERATORS:
            value = getattr(self, "in_" if name == "in" else name, None)
            if value is not None:
                out.append((name, value))
        return out

    def describe(self) -> str:
        return ", ".join(f"{op} {v if not isinstance(v, tuple | list) else list(v)}" for op, v in self.operators())


class Comparison(_Ops, Generic[V]):
    """`eq, ne, gt, gte, lt, lte, in, not_in, between` (inclusive) on values of type V."""

    eq: V | None = None
    ne: V | None = None
    gt: V | None = None
    gte: V | None = None
    lt: V | None = None
    lte: V | None = None
    in_: list[V] | None = Field(None, alias="in")
    not_in: list[V] | None = None
    between: tuple[V, V] | None = None


class _BareIsEq(GrammarModel):
    """A bare value (not a mapping) means `eq`."""

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {"eq": value}


Count = Annotated[int, Field(strict=True)]
Yuan = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]


class TextComparison(_BareIsEq, Comparison[Text]):
    """A comparison of a text field; a bare value means `eq`."""


class CountComparison(_BareIsEq, Comparison[Count]):
    """A comparison of a whole number (a count, points, days); a bare value means `eq`."""


class MoneyComparison(Comparison[Yuan]):
    """A comparison of an amount in yuan (exact to the fen)."""


# --------------------------------------------------------------------------- leaves

class PurchaseFilter(Window):
    """Filters on paid, not refunded order lines, and the window of their local paid date."""

    category: Text | None = None
    sku: Text | None = None
    platform: Text | None = None
    trial: StrictBool | None = None

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k)}" for k in ("category", "sku", "platform", "trial")
                 if getattr(self, k) is not None]
        return ", ".join([*parts, self.describe_window()])


class LastPurchaseFilter(PurchaseFilter, RequiredWindow):
    """The member's most recent matching purchase falls in the window."""


class CountFilter(Comparison[Count], Window):
    """Number of paid, not refunded orders (optionally `within_days`)."""


class MoneyFilter(MoneyComparison, Window):
    """An amount over paid, not refunded orders (optionally `within_days`)."""


class MemberFilter(GrammarModel):
    """Comparisons on member fields; every field given must hold."""

    tier: TextComparison | None = None
    points: CountComparison | None = None
    city: TextComparison | None = None
    origin_platform: TextComparison | None = None
    habitual_platform: TextComparison | None = None
    """The platform with the most paid orders (ties: the most recent paid order, then alphabetical)."""
    joined_days_ago: CountComparison | None = None
    """Calendar days from the local join date to the local evaluation date."""

    @model_validator(mode="after")
    def _some_field(self) -> MemberFilter:
        if not self.fields():
            raise ValueError("needs at least one field: tier, points, city, origin_platform, "
                             "habitual_platform, joined_days_ago")
        return self

    def fields(self) -> list[tuple[str, _Ops]]:
        return [(name, getattr(self, name)) for name in type(self).grammar_fields() if getattr(self, name) is not None]


class EventFilter(Window):
    """An event of `type`, with `where` attribute values (compared as JSON text), in the window."""

    type: Text
    where: dict[Text, Text] | None = None


class CouponExpiring(GrammarModel):
    """An unredeemed, unexpired coupon whose local expiry date is at most N days after today."""

    within_days: Days


class PointsExpiring(GrammarModel):
    """`points_expiring` ≥ `min_points` expiring on a local date from today to today+N."""

    within_days: Days
    min_points: Annotated[int, Field(ge=1, strict=True)] = 1


class TriggeringOrder(GrammarModel):
    """The order named by the triggering event (`attributes.order_id`) is (not) paid."""

    paid: StrictBool


class _Leaf(GrammarModel):
    @property
    def kind(self) -> str:
        return type(self).grammar_fields()[0]

    @property
    def arg(self) -> Any:
        return getattr(self, self.kind)


class Purchased(_Leaf):
    purchased: PurchaseFilter


class LastPurchase(_Leaf):
    last_purchase: LastPurchaseFilter


class OrderCount(_Leaf):
    order_count: CountFilter


class TotalSpend(_Leaf):
    total_spend: MoneyFilter


class AvgOrderValue(_Leaf):
    avg_order_value: MoneyFilter


class Member(_Leaf):
    member: MemberFilter


class HasTag(_Leaf):
    tag: Text


class HadEvent(_Leaf):
    event: EventFilter


class HasCouponExpiring(_Leaf):
    coupon_expiring: CouponExpiring


class HasPointsExpiring(_Leaf):
    points_expiring: PointsExpiring


class Reachable(_Leaf):
    reachable: Annotated[list[ChannelName], Field(min_length=1)]
    """One channel name or a list of them."""

    @field_validator("reachable", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def channels(self) -> list[str]:
        return list(self.reachable)


class TriggeringOrderLeaf(_Leaf):
    triggering_order: TriggeringOrder


Leaf = (Purchased | LastPurchase | OrderCount | TotalSpend | AvgOrderValue | Member | HasTag | HadEvent
        | HasCouponExpiring | HasPointsExpiring | Reachable | TriggeringOrderLeaf)
LEAF_MODELS: dict[str, type[_Leaf]] = {
    m.grammar_fields()[0]: m
    for m in (Purchased, LastPurchase, OrderCount, TotalSpend, AvgOrderValue, Member, HasTag, HadEvent,
              HasCouponExpiring, HasPointsExpiring, Reachable, TriggeringOrderLeaf)
}
GROUP_KEYS = ("all", "any", "none")


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = list(value)
        if any(k in GROUP_KEYS for k in keys):
            return "group"
        if len(keys) == 1 and keys[0] in LEAF_MODELS:
            return str(keys[0])
    return None


if TYPE_CHECKING:
    Condition: TypeAlias = "Group | Leaf"
else:
    # A tagged union: the tag is the item's one key (or "group"), so an unknown leaf name is one
    # clear error rather than one per leaf model.
    Condition = Annotated[
        Union[
            Annotated["Group", Tag("group")],
            *(Annotated[model, Tag(name)] for name, model in LEAF_MODELS.items()),
        ],
        Discriminator(_condition_kind, custom_error_type="unknown_condition",
                      custom_error_message="not a condition"),
    ]


class Group(GrammarModel):
    """`all` (every item holds), `any` (at least one holds), `none` (no item holds); given together, all must hold."""

    all: list[Condition] | None = None
    any: list[Condition] | None = None
    none: list[Condition] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Group:
        if self.all is None and self.any is None and self.none is None:
            raise ValueError("a group needs all, any or none")
        if self.any == []:
            raise ValueError("an empty `any` list matches nobody")
        return self

    def parts(self) -> list[tuple[str, list[Group | _Leaf]]]:
        return [(k, getattr(self, k)) for k in GROUP_KEYS if getattr(self, k) is not None]


Group.model_rebuild()


def leaf_paths(node: Group | _Leaf, path: tuple[Any, ...] = ("audience",)) -> list[tuple[tuple[Any, ...], _Leaf]]:
    """(document path, leaf) for every leaf, depth first: the path locates the leaf in the YAML."""
    if isinstance(node, Group):
        return [found for kind, items in node.parts() for i, item in enumerate(items)
                for found in leaf_paths(item, (*path, kind, i))]
    return [((*path, node.kind), node)]


def walk_leaves(node: Group | _Leaf) -> list[_Leaf]:
    """Every leaf of the tree, depth first, in document order."""
    if isinstance(node, Group):
        return [leaf for _, items in node.parts() for item in items for leaf in walk_leaves(item)]
    return [node]
