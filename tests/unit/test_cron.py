"""POSIX cron: fields, names, Sunday as 0 and 7, day-of-month OR day-of-week, half-open occurrences, DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from engine.grammar.cron import Cron

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def local(tz: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=tz)  # type: ignore[misc]


def runs(expression: str, after: datetime, until: datetime, tz: ZoneInfo = SHANGHAI) -> list[datetime]:
    return list(Cron.parse(expression).occurrences(after, until, tz))


def days(expression: str, start: date, end: date) -> list[int]:
    """Days of the month on which `expression` fires between two dates (Shanghai)."""
    fired = runs(expression, local(SHANGHAI, start.year, start.month, start.day) - timedelta(seconds=1),
                 local(SHANGHAI, end.year, end.month, end.day, 23, 59))
    return [moment.day for moment in fired]


# --------------------------------------------------------------------------- next runs


def test_daily__next_runs() -> None:
    """`0 10 * * *` fires at 10:00 local every day."""
    fired = runs("0 10 * * *", local(SHANGHAI, 2026, 11, 22, 9, 0), local(SHANGHAI, 2026, 11, 25, 0, 0))
    assert fired == [local(SHANGHAI, 2026, 11, d, 10, 0) for d in (22, 23, 24)]
    assert all(moment.tzinfo == SHANGHAI for moment in fired)


def test_daily__next_after_is_strict() -> None:
    """The next run after exactly 10:00 is tomorrow's 10:00; after 09:59 it is today's."""
    cron = Cron.parse("0 10 * * *")
    assert cron.next_after(local(SHANGHAI, 2026, 11, 22, 10, 0), SHANGHAI) == local(SHANGHAI, 2026, 11, 23, 10, 0)
    assert cron.next_after(local(SHANGHAI, 2026, 11, 22, 9, 59), SHANGHAI) == local(SHANGHAI, 2026, 11, 22, 10, 0)


def test_next_after__instant_in_another_zone() -> None:
    """`after` may be given in UTC: 01:59Z is 09:59 Shanghai, so 10:00 Shanghai is next."""
    cron = Cron.parse("0 10 * * *")
    moment = cron.next_after(datetime(2026, 11, 22, 1, 59, tzinfo=UTC), SHANGHAI)
    assert moment == datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    assert moment is not None and moment.utcoffset() == timedelta(hours=8)


def test_next_after__month_end_and_leap_day() -> None:
    """`0 0 29 2 *` next fires on the next leap day; `31 2` (30 February too) never fires."""
    cron = Cron.parse("0 0 29 2 *")
    assert cron.next_after(local(SHANGHAI, 2026, 3, 1), SHANGHAI) == local(SHANGHAI, 2028, 2, 29)
    assert Cron.parse("0 0 30 2 *").next_after(local(SHANGHAI, 2026, 1, 1), SHANGHAI) is None


def test_next_after__crosses_the_year() -> None:
    """`0 9 1 jan *` after New Year's morning is next year's."""
    cron = Cron.parse("0 9 1 jan *")
    assert cron.next_after(local(SHANGHAI, 2026, 1, 1, 9, 0), SHANGHAI) == local(SHANGHAI, 2027, 1, 1, 9, 0)


# --------------------------------------------------------------------------- day of week, day of month


def test_day_of_week__0_and_7_are_sunday() -> None:
    """Day-of-week 0 and 7 both mean Sunday."""
    sunday_0 = days("0 10 * * 0", date(2026, 11, 1), date(2026, 11, 30))
    sunday_7 = days("0 10 * * 7", date(2026, 11, 1), date(2026, 11, 30))
    assert sunday_0 == sunday_7 == [1, 8, 15, 22, 29]
    assert all(date(2026, 11, d).isoweekday() == 7 for d in sunday_0)


def test_day_of_week__names_and_ranges_through_7() -> None:
    """`fri-sun` and `5-7` are Friday, Saturday, Sunday; `SUN` is case-insensitive."""
    weekend = days("0 10 * * 5-7", date(2026, 11, 1), date(2026, 11, 14))
    assert weekend == [1, 6, 7, 8, 13, 14]
    assert days("0 10 * * fri-sat,SUN", date(2026, 11, 1), date(2026, 11, 14)) == weekend
    assert Cron.parse("0 10 * * mon-fri").weekdays == frozenset({1, 2, 3, 4, 5})


def test_day_of_month_and_week__either_matches() -> None:
    """`0 10 13 * 5` fires on the 13th and on every Friday (POSIX: either field matches)."""
    assert days("0 10 13 * 5", date(2026, 12, 1), date(2026, 12, 31)) == [4, 11, 13, 18, 25]


def test_day_of_month_only() -> None:
    """With day-of-week `*`, only the day of month counts."""
    assert days("0 10 13 * *", date(2026, 12, 1), date(2026, 12, 31)) == [13]


def test_day_of_week_only() -> None:
    """With day-of-month `*`, only the day of week counts."""
    assert days("0 10 * * 5", date(2026, 12, 1), date(2026, 12, 31)) == [4, 11, 18, 25]


def test_month__names_and_lists() -> None:
    """`jan,JUL` restricts the months."""
    cron = Cron.parse("0 10 1 jan,JUL *")
    assert cron.months == frozenset({1, 7})
    assert cron.next_after(local(SHANGHAI, 2026, 2, 1), SHANGHAI) == local(SHANGHAI, 2026, 7, 1, 10, 0)


# --------------------------------------------------------------------------- ranges, steps, lists


@pytest.mark.parametrize(("field", "values"), [
    ("*/15", {0, 15, 30, 45}),
    ("0-30/10", {0, 10, 20, 30}),
    ("5/20", {5, 25, 45}),
    ("1,2,3", {1, 2, 3}),
    ("1-3,50-59/5", {1, 2, 3, 50, 55}),
    ("7", {7}),
])
def test_minutes__ranges_steps_lists(field: str, values: set[int]) -> None:
    """Steps, ranges and lists expand to the expected minutes."""
    assert Cron.parse(f"{field} 10 * * *").minutes == frozenset(values)


def test_every_15_minutes__occurrences() -> None:
    """`*/15 9-10 * * *` fires 8 times a day, on the quarter hours of 9 and 10 o'clock."""
    fired = runs("*/15 9-10 * * *", local(SHANGHAI, 2026, 11, 22), local(SHANGHAI, 2026, 11, 23))
    assert [(m.hour, m.minute) for m in fired] == [(h, q) for h in (9, 10) for q in (0, 15, 30, 45)]


def test_whitespace__tabs_and_repeated_spaces() -> None:
    """Fields may be separated by any run of blanks, as in a crontab."""
    assert Cron.parse(" 0\t10  *  * *  ").hours == frozenset({10})


# --------------------------------------------------------------------------- invalid expressions


@pytest.mark.parametrize(("expression", "field"), [
    ("60 10 * * *", "minute"),
    ("-1 10 * * *", "minute"),
    ("*/0 10 * * *", "minute"),
    ("1,,2 10 * * *", "minute"),
    ("0 24 * * *", "hour"),
    ("0 noon * * *", "hour"),
    ("0 10 0 * *", "day of month"),
    ("0 10 32 * *", "day of month"),
    ("0 10 20-10 * *", "day of month"),
    ("0 10 * 13 *", "month"),
    ("0 10 * mon *", "month"),
    ("0 10 * * 8", "day of week"),
    ("0 10 * * jan", "day of week"),
    ("0 10 * * 1/x", "day of week"),
])
def test_invalid__names_the_field(expression: str, field: str) -> None:
    """Every invalid field raises ValueError naming that field."""
    with pytest.raises(ValueError, match=field):
        Cron.parse(expression)


@pytest.mark.parametrize("expression", ["", "0 10 * *", "0 10 * * * *", "@daily", "0 10 * * * 2026"])
def test_invalid__field_count(expression: str) -> None:
    """Anything but five fields is refused, saying so."""
    with pytest.raises(ValueError, match="want 5 fields"):
        Cron.parse(expression)


@pytest.mark.parametrize("expression", ["² 10 * * *", "٣ 10 * * *", "0 １0 * * *"])
def test_invalid__non_ascii_digits_name_the_field(expression: str) -> None:
    """Only ASCII digits are numbers in cron: '²', Arabic-Indic or full-width digits are refused with the field."""
    with pytest.raises(ValueError, match="minute|hour") as info:
        Cron.parse(expression)
    assert "invalid literal" not in str(info.value)


def test_invalid__not_text() -> None:
    """A non-string schedule is a ValueError, not a TypeError."""
    with pytest.raises(ValueError, match="must be text"):
        Cron.parse(10)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- occurrences are (after, until]


def test_occurrences__half_open() -> None:
    """`after` itself is excluded and `until` itself included."""
    ten = local(SHANGHAI, 2026, 11, 22, 10, 0)
    assert runs("0 10 * * *", ten, ten + timedelta(days=1)) == [ten + timedelta(days=1)]
    assert runs("0 10 * * *", ten - timedelta(microseconds=1), ten) == [ten]
    assert runs("0 10 * * *", ten, ten) == []


def test_occurrences__utc_bounds_shanghai_wall_time() -> None:
    """Bounds in UTC select Shanghai wall times: 10:00 Shanghai is 02:00 UTC."""
    fired = runs("0 10 * * *", datetime(2026, 11, 21, 18, 0, tzinfo=UTC), datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
    assert fired == [local(SHANGHAI, 2026, 11, 22, 10, 0)]


def test_occurrences__ascending_without_duplicates() -> None:
    """A month of `*/30 * * * *` is strictly ascending with 48 runs a day."""
    fired = runs("*/30 * * * *", local(SHANGHAI, 2026, 11, 1), local(SHANGHAI, 2026, 12, 1))
    assert len(fired) == 30 * 48
    assert all(a < b for a, b in pairwise(fired))


# --------------------------------------------------------------------------- daylight saving time


def test_dst__spring_forward_skips_the_missing_wall_time() -> None:
    """New York 2026-03-08: 02:30 does not exist, so `30 2 * * *` skips that day."""
    fired = runs("30 2 * * *", local(NEW_YORK, 2026, 3, 7), local(NEW_YORK, 2026, 3, 10), NEW_YORK)
    assert [m.replace(tzinfo=None) for m in fired] == [datetime(2026, 3, 7, 2, 30), datetime(2026, 3, 9, 2, 30)]
    assert [m.astimezone(UTC).hour for m in fired] == [7, 6]  # EST then EDT


def test_dst__spring_forward_hourly() -> None:
    """Hourly runs on the spring-forward night go 01:00 EST then 03:00 EDT, one hour apart."""
    fired = runs("0 * * * *", local(NEW_YORK, 2026, 3, 8, 0, 30), local(NEW_YORK, 2026, 3, 8, 3, 30), NEW_YORK)
    assert [m.hour for m in fired] == [1, 3]
    assert fired[1].astimezone(UTC) - fired[0].astimezone(UTC) == timedelta(hours=1)


def test_dst__fall_back_runs_the_repeated_time_once() -> None:
    """New York 2026-11-01: 01:30 happens twice; `30 1 * * *` runs once, at the first (EDT, 05:30Z)."""
    fired = runs("30 1 * * *", local(NEW_YORK, 2026, 10, 31, 12), local(NEW_YORK, 2026, 11, 2, 12), NEW_YORK)
    assert [m.astimezone(UTC) for m in fired] == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
                                                   datetime(2026, 11, 2, 6, 30, tzinfo=UTC)]


def test_dst__fall_back_half_hourly() -> None:
    """Half-hourly runs through the repeated hour: 01:00 and 01:30 once each, then 02:00 EST."""
    fired = runs("*/30 * * * *", datetime(2026, 11, 1, 4, 0, tzinfo=UTC), datetime(2026, 11, 1, 7, 0, tzinfo=UTC),
                 NEW_YORK)
    assert [m.astimezone(UTC).strftime("%H:%M") for m in fired] == ["04:30", "05:00", "05:30", "07:00"]


def test_dst__next_after_across_the_gap() -> None:
    """The next `30 2 * * *` after 2026-03-07 03:00 is 2026-03-09 02:30 (the 8th has no 02:30)."""
    cron = Cron.parse("30 2 * * *")
    assert cron.next_after(local(NEW_YORK, 2026, 3, 7, 3), NEW_YORK) == local(NEW_YORK, 2026, 3, 9, 2, 30)
