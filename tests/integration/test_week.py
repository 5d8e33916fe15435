"""A simulated week under frozen time: hourly `siyu tick`s over three playbooks, on both databases.

The brand has the documented default policies (any 1/day, WeCom 2/7 days, SMS 4/30 days,
SMS quiet 21:00–09:00) and three playbooks: a weekday WeCom-then-SMS nudge at 09:00
(`1-5`), a daily SMS at 10:00 with a 3-day cooldown, and an evening SMS at 22:00 that
quiet hours defer to 09:00. Time is frozen with freezegun and moved hour by hour from
Monday 2026-11-23 00:00 to Sunday 23:00 (Shanghai); every tick reads the wall clock.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

import pytest
from daemonkit import WECOM, Brand, hours, scheduled
from freezegun import freeze_time
from scenario import PHONE, SHANGHAI, add_member
from testdb import new_database_url

from engine.store.schema import REACHING_STATES

MONDAY = date(2026, 11, 23)
WEEK = [MONDAY + timedelta(days=n) for n in range(7)]
MEMBERS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "A1": (["weekday"], WECOM),  # WeCom Mon, Tue; then over the WeCom cap: SMS
    "A2": (["weekday", "daily"], WECOM),  # the weekday nudge wins the day; daily SMS at the weekend
    "B1": (["daily"], {}),  # daily SMS, every third day (cooldown)
    "B2": (["daily", "evening"], {}),  # the evening SMS lands at 09:00 and takes the next day
    "C1": (["evening"], {}),  # evening SMS at 09:00 until the SMS cap (4 in 30 days)
    "C2": (["weekday", "evening"], WECOM),
    "N1": (["daily"], {"phone": None}),  # unreachable
}


def _at(day: date, clock: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(clock), tzinfo=SHANGHAI)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def week(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brand]:
    """The brand after a week of hourly ticks, simulated once per database (as the `db_url` fixture would)."""
    root = tmp_path_factory.mktemp(f"week-{request.param}")
    database = new_database_url(request.param, root)
    brand = Brand(root, next(database))
    brand.configure()  # the documented default policies
    brand.add_playbook(scheduled("weekday", "0 9 * * 1-5", channels=("wecom", "sms"), tag="weekday", priority=80))
    brand.add_playbook(scheduled("daily", "0 10 * * *", tag="daily", limits={"cooldown_days": 3}))
    brand.add_playbook(scheduled("evening", "0 22 * * *", tag="evening"))
    with brand.engine.begin() as conn:
        for member_id, (tags, fields) in MEMBERS.items():
            add_member(conn, member_id, tags=tags, **{"phone": PHONE, "nickname": member_id, **fields})
    with freeze_time(_at(MONDAY, "00:00"), real_asyncio=True) as frozen:
        for at in hours(_at(MONDAY, "00:00"), 7 * 24):
            frozen.move_to(at)
            assert brand.tick_now() == at
    yield brand
    brand.close()
    next(database, None)  # drops the database


def _reaching(brand: Brand) -> list[dict[str, Any]]:
    return [r for r in brand.touches() if r["state"] in REACHING_STATES]


def test_week__scheduled_playbooks_fire_exactly_at_their_times(week: Brand) -> None:
    """Each playbook has one finished run per cron time of the week (weekdays only for `1-5`), started on time."""
    expected = {("weekday", _at(d, "09:00")) for d in WEEK if d.isoweekday() <= 5}
    expected |= {(p, _at(d, clock)) for d in WEEK for p, clock in (("daily", "10:00"), ("evening", "22:00"))}
    got = week.runs()
    assert {(r["playbook"], r["scheduled_for"]) for r in got} == expected
    assert len(got) == len(expected) == 5 + 7 + 7
    assert all(r["started_at"] == r["scheduled_for"] and r["finished_at"] == r["scheduled_for"] for r in got)


def test_week__no_member_is_over_any_cap_on_any_local_day(week: Brand) -> None:
    """Counted from the ledger: at most 1 touch a local day, 2 WeCom in any 7 days, 4 SMS in 30 days."""
    per_day: Counter[tuple[str, str, date]] = Counter()
    for r in _reaching(week):
        per_day[(r["member_id"], r["channel"], r["touch_at"].astimezone(SHANGHAI).date())] += 1
    days = [MONDAY + timedelta(days=n) for n in range(8)]
    for member in MEMBERS:
        for day in days:
            assert sum(n for (m, _, d), n in per_day.items() if m == member and d == day) <= 1, (member, day)
            last7 = [day - timedelta(days=k) for k in range(7)]
            assert sum(per_day[(member, "wecom", d)] for d in last7) <= 2, (member, day)
        assert sum(n for (m, ch, _), n in per_day.items() if m == member and ch == "sms") <= 4, member
    reasons = Counter((r["playbook"], r["reason"]) for r in week.touches(state="suppressed"))
    assert reasons[("daily", "frequency_cap")] and reasons[("evening", "frequency_cap")]
    assert reasons[("weekday", "frequency_cap")]


def test_week__over_the_wecom_cap_the_weekday_nudge_falls_through_to_sms(week: Brand) -> None:
    """A1 gets WeCom on Monday and Tuesday, then SMS (WeCom 2 per 7 days), one touch each weekday at 09:00."""
    rows = sorted(week.touches(member_id="A1"), key=lambda r: r["touch_at"])
    channels = ["wecom", "wecom", "sms", "sms", "sms"]
    assert [(r["touch_at"], r["state"], r["channel"]) for r in rows] == [
        (_at(d, "09:00"), "sent", ch) for d, ch in zip(WEEK[:5], channels, strict=True)]


def test_week__cooldown_holds_across_days(week: Brand) -> None:
    """The daily SMS (cooldown_days 3) reaches a member at most once in any 3 local days; B1 on Mon, Thu, Sun."""
    sent: defaultdict[str, list[date]] = defaultdict(list)
    for r in sorted(week.touches(playbook="daily", state="sent"), key=lambda r: r["sent_at"]):
        sent[r["member_id"]].append(r["sent_at"].astimezone(SHANGHAI).date())
    for member, days in sent.items():
        assert all((b - a).days >= 3 for a, b in pairwise(days)), (member, days)
    assert sent["B1"] == [WEEK[0], WEEK[3], WEEK[6]]
    assert Counter(r["reason"] for r in week.touches(playbook="daily", member_id="B1")) == {None: 3, "cooldown": 4}
    assert Counter(r["reason"] for r in week.touches(playbook="daily", member_id="N1")) == {"unreachable": 7}


def test_week__quiet_hour_touches_go_out_at_nine(week: Brand) -> None:
    """Evening SMS decisions wait until 09:00 the next local day; no SMS is ever sent in quiet hours."""
    evening = [r for r in week.touches(playbook="evening") if r["state"] in ("sent", "deferred")]
    assert evening
    for r in evening:
        decided = r["decided_at"].astimezone(SHANGHAI)
        assert (decided.time(), r["touch_at"]) == (time(22), _at(decided.date() + timedelta(days=1), "09:00"))
        if r["state"] == "sent":
            assert r["sent_at"] == r["touch_at"]
        else:  # Sunday's decisions wait for Monday 09:00, after the simulated week
            assert (decided.date(), r["not_before"]) == (WEEK[6], _at(WEEK[6] + timedelta(days=1), "09:00"))
    assert sorted(r["sent_at"] for r in week.touches(playbook="evening", member_id="C1", state="sent")) == [
        _at(d, "09:00") for d in WEEK[1:5]]
    for r in week.touches(channel="sms", state="sent"):
        assert time(9) <= r["sent_at"].astimezone(SHANGHAI).time() < time(21), r


def test_week__every_touch_is_written_once(week: Brand) -> None:
    """The log file holds each sent touch exactly once, and nothing is left queued or sending."""
    logged = Counter(line["touch_id"] for line in week.logged())
    assert set(logged.values()) == {1}
    assert set(logged) == {r["touch_id"] for r in week.touches(state="sent")}
    assert {r["state"] for r in week.touches()} <= {"sent", "suppressed", "deferred"}
    assert {r["playbook"] for r in week.touches(state="sent")} == {"weekday", "daily", "evening"}
