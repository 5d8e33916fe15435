"""Contact policies without a database: quiet hours, frequency caps, a playbook's limits on top of the config."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from engine.decide.contact_policy import ContactPolicy
from engine.grammar.loader import load_text
from engine.grammar.playbook import Playbook
from engine.grammar.policies import (
    DEFAULT_FREQUENCY,
    DEFAULT_QUIET_HOURS,
    FrequencyRule,
    MemberHistory,
    PolicySettings,
    frequency_allows,
    in_quiet_hours,
    next_allowed,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = (time(21), time(9))
TODAY = date(2026, 11, 22)


def at(text: str, tz: ZoneInfo = SHANGHAI) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def rule(channel: str, most: int, per_days: int) -> FrequencyRule:
    return FrequencyRule(channel=channel, max=most, per_days=per_days)


def history(*touches: tuple[str, int]) -> MemberHistory:
    """Touches as (channel, days before TODAY)."""
    h = MemberHistory({})
    for channel, days_ago in touches:
        h.add(channel, TODAY - timedelta(days=days_ago))
    return h


# --------------------------------------------------------------------------- quiet hours

@pytest.mark.parametrize(("clock", "quiet"), [
    ("20:59", False), ("21:00", True), ("23:59", True), ("00:00", True), ("08:59", True), ("09:00", False),
    ("12:00", False),
])
def test_in_quiet_hours__window_across_midnight(clock: str, quiet: bool) -> None:
    """21:00–09:00 is quiet from 21:00 up to, not including, 09:00 the next morning."""
    assert in_quiet_hours(at(f"2026-11-22 {clock}"), NIGHT, SHANGHAI) is quiet


@pytest.mark.parametrize(("clock", "quiet"), [
    ("11:59", False), ("12:00", True), ("13:59", True), ("14:00", False)])
def test_in_quiet_hours__window_within_a_day(clock: str, quiet: bool) -> None:
    """A same-day window 12:00–14:00 is half-open too."""
    assert in_quiet_hours(at(f"2026-11-22 {clock}"), (time(12), time(14)), SHANGHAI) is quiet


def test_in_quiet_hours__local_time_of_the_given_zone() -> None:
    """14:00 UTC is 22:00 in Shanghai: quiet there, not in New York (09:00)."""
    moment = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
    assert in_quiet_hours(moment, NIGHT, SHANGHAI)
    assert not in_quiet_hours(moment, NIGHT, NEW_YORK)


def test_in_quiet_hours__empty_window_is_never_quiet() -> None:
    """A window that starts where it ends (09:00–09:00) is empty, not the whole day."""
    assert not in_quiet_hours(at("2026-11-22 09:00"), (time(9), time(9)), SHANGHAI)


def test_next_allowed__allowed_moment_is_none() -> None:
    """Outside every window there is nothing to wait for."""
    assert next_allowed(at("2026-11-22 20:59"), [NIGHT], SHANGHAI) is None
    assert next_allowed(at("2026-11-22 10:00"), [], SHANGHAI) is None


@pytest.mark.parametrize(("moment", "allowed"), [
    ("2026-11-22 21:00", "2026-11-23 09:00"),
    ("2026-11-22 22:00:30", "2026-11-23 09:00"),
    ("2026-11-22 23:59:59", "2026-11-23 09:00"),
    ("2026-11-23 00:00", "2026-11-23 09:00"),
    ("2026-11-23 08:59", "2026-11-23 09:00"),
])
def test_next_allowed__across_midnight_is_nine_next_local_morning(moment: str, allowed: str) -> None:
    """Evening and small-hours moments all wait for 09:00 of the morning that ends the window."""
    assert next_allowed(at(moment), [NIGHT], SHANGHAI) == at(allowed)


def test_next_allowed__from_utc_answers_the_local_minute() -> None:
    """A UTC instant in Shanghai's quiet hours waits for 09:00 Shanghai (01:00 UTC)."""
    got = next_allowed(datetime(2026, 11, 22, 14, 0, tzinfo=UTC), [NIGHT], SHANGHAI)
    assert got == datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


def test_next_allowed__overlapping_windows_wait_for_the_last_end() -> None:
    """A config window 21:00–09:00 and a playbook window 08:00–10:00 together allow 10:00."""
    assert next_allowed(at("2026-11-22 23:00"), [NIGHT, (time(8), time(10))], SHANGHAI) == at("2026-11-23 10:00")


def test_next_allowed__across_a_dst_change() -> None:
    """In New York, 22:00 before the spring-forward night waits for 09:00 EDT (13:00 UTC)."""
    got = next_allowed(at("2026-03-07 22:00", NEW_YORK), [NIGHT], NEW_YORK)
    assert got is not None
    assert got.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 8, 9, 0)
    assert got.astimezone(UTC) == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)


def test_next_allowed__windows_covering_the_day_are_an_error() -> None:
    """Two windows that cover all 24 hours leave no minute: an error, not an endless wait."""
    with pytest.raises(ValueError, match="whole day"):
        next_allowed(at("2026-11-22 10:00"), [NIGHT, (time(9), time(21))], SHANGHAI)


# --------------------------------------------------------------------------- frequency caps

def test_frequency_allows__one_a_day_counts_today_only() -> None:
    """`any 1/1`: a touch today on any channel blocks another; yesterday's does not."""
    rules = [rule("any", 1, 1)]
    assert not frequency_allows(rules, history(("wecom", 0)), "sms", TODAY)
    assert frequency_allows(rules, history(("sms", 1)), "sms", TODAY)
    assert frequency_allows(rules, history(), "sms", TODAY)


def test_frequency_allows__per_days_counts_the_last_n_local_days_including_today() -> None:
    """`wecom 2/7`: touches 0 and 6 days ago fill it; one 7 days ago has left the window."""
    rules = [rule("wecom", 2, 7)]
    assert not frequency_allows(rules, history(("wecom", 0), ("wecom", 6)), "wecom", TODAY)
    assert frequency_allows(rules, history(("wecom", 1), ("wecom", 7)), "wecom", TODAY)


def test_frequency_allows__a_channel_rule_leaves_other_channels_alone() -> None:
    """Over the WeCom cap, SMS is still allowed (the fall-through), and SMS touches do not count for WeCom."""
    rules = [rule("wecom", 2, 7), rule("sms", 4, 30)]
    tired = history(("wecom", 1), ("wecom", 3))
    assert not frequency_allows(rules, tired, "wecom", TODAY)
    assert frequency_allows(rules, tired, "sms", TODAY)
    assert frequency_allows(rules, history(*[("sms", n) for n in range(3)]), "wecom", TODAY)
    assert not frequency_allows(rules, history(*[("sms", n) for n in (1, 10, 20, 29)]), "sms", TODAY)


def test_frequency_allows__every_rule_must_pass() -> None:
    """Rules add up: `any 3/7` and `sms 1/7` refuse a second SMS even though `any` has room."""
    rules = [rule("any", 3, 7), rule("sms", 1, 7)]
    assert not frequency_allows(rules, history(("sms", 2)), "sms", TODAY)
    assert frequency_allows(rules, history(("sms", 2)), "wecom", TODAY)
    assert frequency_allows([], history(*[("sms", 0)] * 9), "sms", TODAY)
    assert not frequency_allows([rule("any", 0, 1)], history(), "sms", TODAY)


def test_member_history__future_days_do_not_count_for_today() -> None:
    """A touch deferred to tomorrow counts on tomorrow, not today."""
    h = history(("sms", -1))
    assert h.within("any", 1, TODAY) == 0
    assert h.within("sms", 1, TODAY + timedelta(days=1)) == 1


# --------------------------------------------------------------------------- config + playbook limits

def book(limits: str = "") -> Playbook:
    text = ("id: p\nname: p\ntrigger: {schedule: \"0 10 * * *\"}\naudience: {all: [{tag: vip}]}\n"
            "channels:\n  - sms: {template_code: SMS_1}\n" + limits)
    playbook, _ = load_text(text, "p.yaml")
    return playbook


def test_policy_settings__absent_keys_take_defaults_and_empty_disables() -> None:
    """An absent `frequency` or `quiet_hours` takes the documented default; [] and {} switch them off."""
    defaults = PolicySettings.model_validate({})
    assert (tuple(defaults.frequency), defaults.quiet_hours, defaults.budgets) == (
        DEFAULT_FREQUENCY, DEFAULT_QUIET_HOURS, {})
    assert DEFAULT_QUIET_HOURS == {"sms": NIGHT, "ai_call": NIGHT}
    off = PolicySettings.model_validate({"frequency": [], "quiet_hours": {}})
    assert (off.frequency, off.quiet_hours) == ([], {})
    assert PolicySettings.model_validate({"frequency": []}).quiet_hours == DEFAULT_QUIET_HOURS


def test_effective_policies__playbook_limits_add_to_the_config() -> None:
    """A playbook's caps, quiet hours and budget add to the config's; costs and budgets become 1/10,000 yuan."""
    config = PolicySettings.model_validate({
        "frequency": [{"channel": "any", "max": 1, "per_days": 1}],
        "quiet_hours": {"sms": ["21:00", "09:00"]}, "budgets": {"sms": {"daily": "0.09"}}})
    playbook = book("limits:\n  frequency: [{channel: sms, max: 1, per_days: 14}]\n"
                    "  quiet_hours: {sms: [\"12:00\", \"14:00\"], wecom: [\"22:00\", \"08:00\"]}\n"
                    "  budget_daily: 0.5\n  expire_after: 2h\n")
    got = ContactPolicy.of(playbook, config, {"sms": Decimal("0.045"), "wecom": Decimal(0)})
    assert got.frequency == (rule("any", 1, 1), rule("sms", 1, 14))
    assert dict(got.quiet_hours) == {"sms": (NIGHT, (time(12), time(14))), "wecom": ((time(22), time(8)),)}
    assert (dict(got.channel_budgets_e4), got.playbook_budget_e4) == ({"sms": 900}, 5000)
    assert dict(got.costs_e4) == {"sms": 450, "wecom": 0}
    assert (got.expire_after, got.longest_cap_days) == (timedelta(hours=2), 14)


def test_effective_policies__a_playbook_cannot_loosen_the_config() -> None:
    """A playbook rule `any 5/1` sits beside the config's `any 1/1`: a second touch today is still refused."""
    config = PolicySettings.model_validate({"frequency": [{"channel": "any", "max": 1, "per_days": 1}]})
    got = ContactPolicy.of(book("limits:\n  frequency: [{channel: any, max: 5, per_days: 1}]\n"), config, {})
    assert not frequency_allows(got.frequency, history(("sms", 0)), "sms", TODAY)


def test_effective_policies__no_limits_is_the_config() -> None:
    """A playbook without `limits` gets the config's policies as they are, and no playbook budget."""
    config = PolicySettings.model_validate({})
    got = ContactPolicy.of(book(), config, {})
    assert got.frequency == DEFAULT_FREQUENCY
    assert dict(got.quiet_hours) == {"sms": (NIGHT,), "ai_call": (NIGHT,)}
    assert (got.playbook_budget_e4, got.expire_after, dict(got.channel_budgets_e4)) == (None, None, {})
    assert got.longest_cap_days == 30
    assert ContactPolicy.of(book(), PolicySettings.model_validate({"frequency": []}), {}).longest_cap_days == 1


def test_default_frequency__wecom_receiving_cap_is_four_a_month() -> None:
    """WeCom's per-customer cap is a default: a customer sent 4 WeCom messages in the last 30 days
    (never two in a week) gets no fifth; on day 30 the oldest no longer counts."""
    sent = history(("wecom", 1), ("wecom", 8), ("wecom", 15), ("wecom", 22))
    assert not frequency_allows(DEFAULT_FREQUENCY, sent, "wecom", TODAY)
    assert frequency_allows(DEFAULT_FREQUENCY, sent, "sms", TODAY)
    older = history(("wecom", 8), ("wecom", 15), ("wecom", 22), ("wecom", 30))
    assert frequency_allows(DEFAULT_FREQUENCY, older, "wecom", TODAY)


def test_default_frequency__carriers_three_marketing_sms_a_day() -> None:
    """Without the brand's one-a-day rule, the carriers' per-number rule still stops a fourth SMS today."""
    carriers = [r for r in DEFAULT_FREQUENCY if r.channel == "sms" and r.per_days == 1]
    assert not frequency_allows(carriers, history(("sms", 0), ("sms", 0), ("sms", 0)), "sms", TODAY)
    assert frequency_allows(carriers, history(("sms", 0), ("sms", 0)), "sms", TODAY)
