"""The playbook document: id, trigger, audience, offer, channels, limits, holdout.

These models are the contract marketers write in YAML; `siyu check` reports their
errors with file:line:col. See engine/grammar/audience.py for the audience tree.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.clock import parse_duration, zone
from engine.grammar.addresses import CHANNEL_NAMES, ChannelName
from engine.grammar.audience import Group, leaf_paths
from engine.grammar.cron import Cron
from engine.grammar.policies import Duration, FrequencyRule, QuietWindow
from engine.grammar.values import GrammarModel, Text

PLAYBOOK_ID = r"^[a-z0-9][a-z0-9-]*$"
OFFER_METRICS = ("avg_order_value", "total_spend", "order_count")
Yuan = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]


class Trigger(GrammarModel):
    """Exactly one form: `schedule` (5-field cron, playbook timezone) or `event` (+ optional `delay`)."""

    schedule: StrictStr | None = None
    event: Text | None = None
    delay: StrictStr | None = None
    """How long after the event happened it is evaluated: a number and s, m, h or d (e.g. 30m)."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            Cron.parse(value)
        return value

    @field_validator("delay")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Trigger:
        if (self.schedule is None) == (self.event is None):
            raise ValueError("give exactly one of `schedule` (cron) or `event`")
        if self.delay is not None and self.event is None:
            raise ValueError("`delay` goes with `event`, not with `schedule`")
        return self

    @cached_property
    def cron(self) -> Cron | None:
        return Cron.parse(self.schedule) if self.schedule is not None else None

    @property
    def delay_td(self) -> timedelta:
        return parse_duration(self.delay) if self.delay else timedelta(0)


class Coupon(GrammarModel):
    """Spend `threshold` yuan, save `discount` yuan, valid for `valid_days` days."""

    threshold: Yuan
    discount: Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2)]
    valid_days: Annotated[int, Field(ge=1, strict=True)] | None = None


class Tier(GrammarModel):
    """A tier wins when `min` <= the member's metric (first such tier, top to bottom)."""

    min: Yuan
    coupon: Coupon


class Offer(GrammarModel):
    """Either `by` + `tiers` (matched to the member's metric) or a single `coupon`."""

    by: Literal["avg_order_value", "total_spend", "order_count"] | None = None
    tiers: Annotated[list[Tier], Field(min_length=1)] | None = None
    coupon: Coupon | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Offer:
        tiered = self.by is not None or self.tiers is not None
        if tiered and self.coupon is not None:
            raise ValueError("give either `by` with `tiers`, or a single `coupon`, not both")
        if not tiered and self.coupon is None:
            raise ValueError("an offer needs `by` with `tiers`, or a single `coupon`")
        if tiered and (self.by is None or self.tiers is None):
            raise ValueError("`by` and `tiers` go together")
        tiers = self.tiers or []
        for index, tier in enumerate(tiers):
            # The first tier whose min the member reaches wins, so an earlier tier with a lower or
            # equal min takes every member this one could have had.
            earlier = next((n for n in range(index) if tiers[n].min <= tier.min), None)
            if earlier is not None:
                raise PydanticCustomError(
                    "located", f"tier {index + 1} (min {tier.min}) can never win: tier {earlier + 1} "
                    f"(min {tiers[earlier].min}) comes first and wins for every member who reaches {tier.min}; "
                    "list tiers from the highest min down", {"at": ("tiers", index, "min")})
        return self


def _text_values(value: Any) -> Any:
    """Template values may be written as numbers in YAML; they are text to render."""
    if isinstance(value, dict):
        return {k: (str(v) if isinstance(v, int | float | Decimal) and not isinstance(v, bool) else v)
                for k, v in value.items()}
    return value


TemplateText = StrictStr
TemplateMap = dict[Text, TemplateText]


class WecomMessage(GrammarModel):
    """WeCom 1v1 message to an external contact, sent by the member's staff owner."""

    text: TemplateText


class SmsMessage(GrammarModel):
    """An SMS from an approved template: `template_code` and its `params`."""

    template_code: Text
    params: TemplateMap = Field(default_factory=dict)

    _params = field_validator("params", mode="before")(_text_values)


class TemplateMessage(GrammarModel):
    """A WeChat official-account template message."""

    template_id: Text
    url: TemplateText | None = None
    data: TemplateMap = Field(default_factory=dict)

    _data = field_validator("data", mode="before")(_text_values)


class AiCallMessage(GrammarModel):
    """An AI voice call: the `scenario` (mapped to the vendor's objects in config) and its variables."""

    scenario: Text
    variables: TemplateMap = Field(default_factory=dict)

    _variables = field_validator("variables", mode="before")(_text_values)


Message = WecomMessage | SmsMessage | TemplateMessage | AiCallMessage


class ChannelStep(GrammarModel):
    """One channel and its message; exactly one key: sms, ai_call, wecom or template."""

    sms: SmsMessage | None = None
    ai_call: AiCallMessage | None = None
    wecom: WecomMessage | None = None
    template: TemplateMessage | None = None

    @model_validator(mode="after")
    def _one_channel(self) -> ChannelStep:
        given = [c for c in CHANNEL_NAMES if getattr(self, c) is not None]
        if len(given) != 1:
            raise ValueError(f"each list item names one channel ({', '.join(CHANNEL_NAMES)})")
        return self

    @property
    def channel(self) -> str:
        return next(c for c in CHANNEL_NAMES if getattr(self, c) is not None)

    @property
    def message(self) -> Message:
        value: Message = getattr(self, self.channel)
        return value


class Limits(GrammarModel):
    """Per-playbook limits."""

    cooldown_days: Annotated[int, Field(ge=0, strict=True)] | None = None
    """Never touch a member from this playbook twice within N days."""
    max_per_run: Annotated[int, Field(ge=0, strict=True)] | None = None
    """At most N sends per evaluation (the rest: suppressed/max_per_run)."""
    frequency: list[FrequencyRule] = Field(default_factory=list)
    """Extra caps for this playbook's touches, on top of the config's (a playbook may only tighten)."""
    quiet_hours: dict[ChannelName, QuietWindow] = Field(default_factory=dict)
    """Extra quiet hours for this playbook's touches, on top of the config's."""
    budget_daily: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)] | None = None
    """Yuan per local day this playbook may spend."""
    expire_after: Duration | None = None
    """A deferred touch older than this is dropped (suppressed/expired) instead of sent late."""


class Playbook(GrammarModel):
    """One playbook: who to touch, when, with what offer, on which channel."""

    id: Annotated[StrictStr, Field(pattern=PLAYBOOK_ID, max_length=64)]
    name: Annotated[StrictStr, Field(min_length=1)]
    enabled: bool = True
    timezone: StrictStr | None = None
    """IANA timezone; default: the config `timezone` (itself default Asia/Shanghai)."""
    priority: Annotated[int, Field(strict=True)] = 50
    trigger: Trigger
    audience: Group
    offer: Offer | None = None
    channels: Annotated[list[ChannelStep], Field(min_length=1)]
    limits: Limits = Field(default_factory=Limits)
    holdout: Annotated[int, Field(ge=0, le=100)] = 0
    """Percent kept as a control group, a whole number 0–100 (a per-member sha256 draw of 0–99)."""

    @field_validator("holdout", mode="before")
    @classmethod
    def _whole_percent(cls, value: Any) -> Any:
        # The draw is a whole number 0–99, so a fraction cannot mean what it says: 0.1 held out 1 %.
        if isinstance(value, float | Decimal | str) and not isinstance(value, bool):
            try:
                number = Decimal(str(value).strip())
            except ArithmeticError:
                return value
            if number.is_finite() and number != number.to_integral_value():
                raise PydanticCustomError(
                    "holdout_fraction", "holdout is a percentage, a whole number 0–100 (10 holds out 10 % of "
                    "members); {value} is not a whole number", {"value": str(value).strip()})
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Playbook:
        seen: set[str] = set()
        for index, step in enumerate(self.channels):
            if step.channel in seen:
                raise PydanticCustomError("located", "channel '{channel}' is listed twice",
                                          {"channel": step.channel, "at": ("channels", index, step.channel)})
            seen.add(step.channel)
        if self.trigger.event is None:
            for path, leaf in leaf_paths(self.audience):
                if leaf.kind == "triggering_order":
                    raise PydanticCustomError("located", "`triggering_order` needs an event trigger "
                                              "(trigger: {{event: order_created, delay: 30m}})", {"at": path})
        return self

    @property
    def is_event_triggered(self) -> bool:
        return self.trigger.event is not None
