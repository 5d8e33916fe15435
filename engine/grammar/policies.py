"""Contact policies: frequency caps, quiet hours, budgets, opt-outs — the rules that protect trust.

The models here are shared by the config (`policies:`) and the playbook (`limits:`); a
playbook may only tighten: its rules are added to the config's. The pure functions answer
for one member and one touch whether a cap allows it and when quiet hours end. They are
assembled per playbook once, in engine/decide/contact_policy.py; counting happens in the
ledger (engine/ledger/touches.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, Field, field_validator

from engine.clock import parse_duration
from engine.grammar.addresses import CHANNEL_NAMES
from engine.grammar.values import GrammarModel


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
"""A duration written as a number and a unit: 30s, 5m, 1h, 7d."""


def _clock_time(value: Any) -> time:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 21:00 as 1260 (sexagesimal)
        value = f"{value // 60:02d}:{value % 60:02d}"
    if not isinstance(value, str):
        raise ValueError(f"expected a local time such as \"21:00\", got {value!r}")  # noqa: TRY004 - pydantic reports ValueError
    try:
        hours, minutes = value.strip().split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"bad time {value!r}: write HH:MM, e.g. \"21:00\"") from None


ClockTime = Annotated[time, BeforeValidator(_clock_time)]
QuietWindow = tuple[ClockTime, ClockTime]
"""[start, end) local times; a window that crosses midnight (21:00–09:00) is normal."""
ChannelOrAny = str


class FrequencyRule(GrammarModel):
    """At most `max` touches that may reach the member on `channel` (or `any`) in the last `per_days` local days."""

    channel: ChannelOrAny
    max: Annotated[int, Field(ge=0, strict=True)]
    per_days: Annotated[int, Field(ge=1, strict=True)]

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str) -> str:
        if value != "any" and value not in CHANNEL_NAMES:
            raise ValueError(f"channel {value!r} is not one of: any, {', '.join(CHANNEL_NAMES)}")
        return value

    def applies_to(self, channel: str) -> bool:
        return self.channel in ("any", channel)


class Budget(GrammarModel):
    """Yuan per local day."""

    daily: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]


DEFAULT_FREQUENCY = (
    FrequencyRule(channel="any", max=1, per_days=1),
    FrequencyRule(channel="wecom", max=2, per_days=7),
    # WeCom's receiving cap per customer, corp-wide (vendors.md §1): 4 a month is the strictest rule the
    # vendor has had; a corp whose admin allows more may raise it. Over the cap, WeCom drops the message.
    FrequencyRule(channel="wecom", max=4, per_days=30),
    # Carriers' rule for marketing SMS: at most 3 a day to one number (Tencent FAQ; Aliyun allows 50 a day
    # per signature and template). The brand's own rule below is stricter over a month.
    FrequencyRule(channel="sms", max=3, per_days=1),
    FrequencyRule(channel="sms", max=4, per_days=30),
    FrequencyRule(channel="ai_call", max=1, per_days=30),
)
DEFAULT_QUIET_HOURS: dict[str, QuietWindow] = {"sms": (time(21), time(9)), "ai_call": (time(21), time(9))}


class PolicySettings(GrammarModel):
    """Config `policies:`; an absent key takes the default, `[]` or `{}` disables it."""

    frequency: list[FrequencyRule] = Field(default_factory=lambda: list(DEFAULT_FREQUENCY))
    quiet_hours: dict[str, QuietWindow] = Field(default_factory=lambda: dict(DEFAULT_QUIET_HOURS))
    budgets: dict[str, Budget] = Field(default_factory=dict)

    @field_validator("quiet_hours", "budgets")
    @classmethod
    def _channels(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if name not in CHANNEL_NAMES:
                raise ValueError(f"channel {name!r} is not one of: {', '.join(CHANNEL_NAMES)}")
        return value


def in_quiet_hours(moment: datetime, window: QuietWindow, tz: ZoneInfo) -> bool:
    start, end = window
    local = moment.astimezone(tz).time().replace(second=0, microsecond=0)
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end


def next_allowed(moment: datetime, windows: Sequence[QuietWindow], tz: ZoneInfo) -> datetime | None:
    """The first minute at or after `moment` outside every quiet window; None if `moment` is allowed."""
    if not any(in_quiet_hours(moment, w, tz) for w in windows):
        return None
    local = moment.astimezone(tz).replace(second=0, microsecond=0)
    for _ in range(2 * 24 * 60):  # minutes: a day is enough unless the windows cover it all
        local += timedelta(minutes=1)
        if not any(in_quiet_hours(local, w, tz) for w in windows):
            return local
    raise ValueError("quiet hours cover the whole day: nothing could ever be sent")


@dataclass
class MemberHistory:
    """A member's touches that may reach them, as counted by the ledger: (channel, local day) → count."""

    counts: dict[tuple[str, date], int]

    def add(self, channel: str, day: date) -> None:
        self.counts[(channel, day)] = self.counts.get((channel, day), 0) + 1

    def within(self, channel: str, per_days: int, today: date) -> int:
        first = today - timedelta(days=per_days - 1)
        return sum(n for (ch, day), n in self.counts.items()
                   if first <= day <= today and (channel == "any" or ch == channel))


def frequency_allows(rules: Sequence[FrequencyRule], history: MemberHistory, channel: str, today: date) -> bool:
    """True when one more touch on `channel` keeps the member within every rule."""
    return all(history.within(rule.channel, rule.per_days, today) < rule.max
               for rule in rules if rule.applies_to(channel))
