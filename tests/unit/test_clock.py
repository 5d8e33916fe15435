"""Time: durations, `--at` parsing, local calendar days as UTC bounds, and Frame.bounds of each window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from engine.clock import (
    check_aware,
    day_start,
    local_date,
    parse_at,
    parse_duration,
    parse_instant,
    utc,
    zone,
)
from engine.decide.compiler import Frame
from engine.errors import UsageError
from engine.grammar import audience as a

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", timedelta(minutes=30)),
    ("2h", timedelta(hours=2)),
    ("1d", timedelta(days=1)),
    ("45s", timedelta(seconds=45)),
    ("0m", timedelta(0)),
    (" 15 m ", timedelta(minutes=15)),
])
def test_parse_duration__units(text: str, expected: timedelta) -> None:
    """A number and one of s, m, h, d."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "m", "1.5h", "-5m", "30 minutes", "1w", "30M", "1h30m", "1e3s"])
def test_parse_duration__bad(text: str) -> None:
    """Anything else is a ValueError that shows the accepted form."""
    with pytest.raises(ValueError, match="bad duration .*e.g. 30m"):
        parse_duration(text)


# --------------------------------------------------------------------------- instants


def test_parse_instant__no_offset_is_local() -> None:
    """Without an offset the time is local in the given zone."""
    moment = parse_instant("2026-11-22T10:00:00", SHANGHAI)
    assert utc(moment) == datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def test_parse_instant__offset_kept() -> None:
    """An explicit offset wins over the zone."""
    moment = parse_instant("2026-11-22T10:00:00-05:00", SHANGHAI)
    assert moment.utcoffset() == timedelta(hours=-5)
    assert utc(moment) == datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


def test_parse_instant__z_is_utc() -> None:
    """A trailing Z means UTC."""
    moment = parse_instant("2026-11-22T02:00:00Z", SHANGHAI)
    assert moment == datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)


def test_parse_instant__date_alone_is_local_midnight() -> None:
    """A bare date is its local midnight: 16:00 UTC the day before, in Shanghai."""
    assert utc(parse_instant("2026-11-22", SHANGHAI)) == datetime(2026, 11, 21, 16, 0, tzinfo=UTC)


def test_parse_instant__local_in_a_dst_zone() -> None:
    """Local time follows the zone's offset on that date (EST in winter, EDT in summer)."""
    assert parse_instant("2026-01-15T10:00", NEW_YORK).utcoffset() == timedelta(hours=-5)
    assert parse_instant("2026-07-15T10:00", NEW_YORK).utcoffset() == timedelta(hours=-4)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "2026-11-22 25:00", "22/11/2026"])
def test_parse_instant__bad(text: str) -> None:
    """Unparseable instants are ValueErrors showing an ISO example."""
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_instant(text, SHANGHAI)


def test_parse_at__usage_error_names_the_flag() -> None:
    """For the CLI, a bad `--at` is a UsageError located at --at."""
    with pytest.raises(UsageError) as info:
        parse_at("next tuesday", SHANGHAI)
    assert info.value.location == "--at"
    assert str(info.value).startswith("--at: ")


def test_check_aware__rejects_naive() -> None:
    """Naive datetimes are refused wherever an instant is needed."""
    with pytest.raises(ValueError, match="naive"):
        check_aware(datetime(2026, 11, 22, 10, 0))
    with pytest.raises(ValueError, match="naive"):
        utc(datetime(2026, 11, 22, 10, 0))


# --------------------------------------------------------------------------- zones and local days


def test_zone__known_and_unknown() -> None:
    """IANA names resolve; others are ValueErrors that name them."""
    assert zone("Asia/Shanghai") == SHANGHAI
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Base'"):
        zone("Mars/Base")


@pytest.mark.parametrize("name", ["Asia", "America", "", "../etc", "Asia/"])
def test_zone__folder_names_are_unknown_timezones(name: str) -> None:
    """`Asia` is a folder of the zone database, not a zone: a ValueError like any unknown name."""
    with pytest.raises(ValueError, match="unknown timezone"):
        zone(name)


def test_day_start__shanghai_is_16_utc_the_day_before() -> None:
    """The Shanghai calendar day 2026-11-22 starts at 2026-11-21 16:00 UTC."""
    assert day_start(date(2026, 11, 22), SHANGHAI) == datetime(2026, 11, 21, 16, 0, tzinfo=UTC)


def test_day_start__new_york_follows_dst() -> None:
    """New York days start at 05:00 UTC in winter and 04:00 UTC in summer."""
    assert day_start(date(2026, 1, 15), NEW_YORK) == datetime(2026, 1, 15, 5, 0, tzinfo=UTC)
    assert day_start(date(2026, 7, 15), NEW_YORK) == datetime(2026, 7, 15, 4, 0, tzinfo=UTC)


def test_local_date__2330_shanghai_is_that_shanghai_date() -> None:
    """23:30 in Shanghai is on that Shanghai date even though it is 15:30 UTC."""
    moment = datetime(2026, 10, 31, 23, 30, tzinfo=SHANGHAI)
    assert local_date(moment, SHANGHAI) == date(2026, 10, 31)
    assert local_date(datetime(2026, 10, 31, 16, 30, tzinfo=UTC), SHANGHAI) == date(2026, 11, 1)


# --------------------------------------------------------------------------- Frame.bounds


def frame(at: datetime, tz: ZoneInfo = SHANGHAI) -> Frame:
    return Frame(at, tz, "sqlite")


AT = datetime(2026, 11, 22, 10, 0, tzinfo=SHANGHAI)


def shanghai_midnight(day: int, month: int = 11) -> datetime:
    return datetime(2026, month, day, tzinfo=SHANGHAI).astimezone(UTC)


def test_frame__today_is_local() -> None:
    """The evaluation's 'today' is the local date: 01:00 Shanghai is still 'yesterday' in UTC."""
    early = datetime(2026, 11, 21, 17, 0, tzinfo=UTC)  # 01:00 on the 22nd in Shanghai
    assert frame(early).today == date(2026, 11, 22)


def test_frame_bounds__days_ago() -> None:
    """`days_ago: 21` covers exactly the local date 2026-11-01: [Oct 31 16:00Z, Nov 1 16:00Z)."""
    assert frame(AT).bounds(a.Window(days_ago=21)) == (shanghai_midnight(1), shanghai_midnight(2))
    assert frame(AT).bounds(a.Window(days_ago=21)) == (datetime(2026, 10, 31, 16, tzinfo=UTC),
                                                      datetime(2026, 11, 1, 16, tzinfo=UTC))


def test_frame_bounds__days_ago_zero_is_today() -> None:
    """`days_ago: 0` is today's local date."""
    assert frame(AT).bounds(a.Window(days_ago=0)) == (shanghai_midnight(22), shanghai_midnight(23))


def test_frame_bounds__within_days() -> None:
    """`within_days: 3` is today−3 .. today inclusive: four local dates."""
    start, end = frame(AT).bounds(a.Window(within_days=3)) or (None, None)
    assert (start, end) == (shanghai_midnight(19), shanghai_midnight(23))
    assert end - start == timedelta(days=4)  # type: ignore[operator]


def test_frame_bounds__between_days() -> None:
    """`between_days: [90, 180]` is today−180 .. today−90 inclusive."""
    start, end = frame(AT).bounds(a.Window(between_days=(90, 180))) or (None, None)
    assert start == datetime.combine(date(2026, 11, 22) - timedelta(days=180), datetime.min.time(),
                                     tzinfo=SHANGHAI).astimezone(UTC)
    assert end == datetime.combine(date(2026, 11, 22) - timedelta(days=89), datetime.min.time(),
                                   tzinfo=SHANGHAI).astimezone(UTC)


def test_frame_bounds__between_days_equal_is_days_ago() -> None:
    """`between_days: [7, 7]` is the same single date as `days_ago: 7`."""
    f = frame(AT)
    assert f.bounds(a.Window(between_days=(7, 7))) == f.bounds(a.Window(days_ago=7))


def test_frame_bounds__no_window() -> None:
    """A leaf without a window has no bounds."""
    assert frame(AT).bounds(a.Window()) is None


def test_frame_bounds__late_evening_utc_uses_the_shanghai_date() -> None:
    """At 2026-11-21 23:30 UTC it is already the 22nd in Shanghai, so days_ago 1 is the 21st."""
    late = datetime(2026, 11, 21, 23, 30, tzinfo=UTC)
    assert frame(late).bounds(a.Window(days_ago=1)) == (shanghai_midnight(21), shanghai_midnight(22))


def test_frame_bounds__offset_of_at_does_not_matter() -> None:
    """The same instant written with any offset gives the same bounds."""
    same = AT.astimezone(timezone(timedelta(hours=-7)))
    assert frame(same).bounds(a.Window(within_days=3)) == frame(AT).bounds(a.Window(within_days=3))


def test_frame_bounds__dst_day_is_23_hours() -> None:
    """In New York, `days_ago: 0` on 2026-03-08 spans 23 hours: calendar days, not 24-hour blocks."""
    at = datetime(2026, 3, 8, 12, 0, tzinfo=NEW_YORK)
    start, end = frame(at, NEW_YORK).bounds(a.Window(days_ago=0)) or (None, None)
    assert (start, end) == (datetime(2026, 3, 8, 5, tzinfo=UTC), datetime(2026, 3, 9, 4, tzinfo=UTC))
